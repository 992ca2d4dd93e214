"""The ImageNet path end to end with a small random SD VAE: extract, train, convert, sample."""

import pathlib
import subprocess
import sys

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from ditjax.autoencoder import create_autoencoder
from ditjax.data.adm_crop import center_crop_adm, to_model_range
from ditjax.data.latent_format import read_latent_info
from ditjax.data.pipeline import open_latent_source
from test_training_loop import write_image_folder

pytestmark = pytest.mark.slow

IMAGE_SIZE = 32  # 4 x 4 latents with the 8x-downsampling VAE below


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> pathlib.Path:
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=IMAGE_SIZE,
    )
    out = tmp_path_factory.mktemp("vae") / "sd-vae-small"
    vae.save_pretrained(out)
    return out


def run(*args, timeout=600):
    out = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_extract_train_sample_with_sd_vae(vae_dir, tmp_path):
    images = write_image_folder(tmp_path / "images", per_class=2)
    (images / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    latents = tmp_path / "latents"
    run(
        "ditjax.extract_latents",
        f"--source=folder:{images}",
        f"--autoencoder=sd-vae:{vae_dir}",
        f"--image_size={IMAGE_SIZE}",
        f"--out={latents}",
        "--batch_size=8",
    )
    info = read_latent_info(str(latents))
    assert info["latent_shape"] == [4, 4, 4] and info["num_examples"] == 20
    assert info["num_skipped"] == 1 and "broken.jpg" in (latents / "skipped.txt").read_text()
    assert info["scale"] == pytest.approx(0.18215)
    # The stored moments are the VAE's encoding of the ADM-cropped image.
    vae = create_autoencoder(f"sd-vae:{vae_dir}")
    example = open_latent_source(str(latents))[0]
    first = sorted((images / "class_0").glob("*.png"))[0]
    crop = to_model_range(center_crop_adm(Image.open(first), IMAGE_SIZE))[None]
    moments = np.asarray(vae.encode(crop))[0]
    np.testing.assert_allclose(example["mean"], moments[..., :4], atol=2e-3)
    np.testing.assert_allclose(
        example["mean_flip"], np.asarray(vae.encode(crop[:, :, ::-1]))[0, ..., :4], atol=2e-3
    )

    config = pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py"
    workdir = tmp_path / "run"
    run(
        "ditjax.train",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.dataset_dir={latents}",
        f"--config.autoencoder=sd-vae:{vae_dir}",
        f"--config.image_size={IMAGE_SIZE}",
        "--config.latent_size=4",
        "--config.latent_channels=4",
        "--config.model_overrides.hidden_size=32",
        "--config.model_overrides.depth=1",
        "--config.total_steps=2",
        "--config.global_batch_size=4",
        "--config.sample_every=0",
        "--config.checkpoint_every=2",
    )
    assert (workdir / "checkpoints" / "2").is_dir()
    grid = tmp_path / "grid.png"
    run(
        "ditjax.sample",
        f"--checkpoint={workdir}",
        f"--autoencoder=sd-vae:{vae_dir}",
        "--labels=0,1,2",
        "--steps=5",
        "--sampler=ddim",
        "--cfg_scale=4.0",
        f"--out={grid}",
        f"--images_dir={tmp_path / 'each'}",
    )
    image = np.asarray(Image.open(grid))
    assert image.shape == (2 + 34, 2 + 3 * 34, 3)  # one row of three 32 px samples, padded
    assert len(list((tmp_path / "each").glob("*.png"))) == 3
