"""FID during training: the logged figures are those of `ditjax.sample --num_samples` files,
and evaluating leaves the training itself untouched."""

import numpy as np
import pytest

from ditjax.convert import load_pytorch_fid_inception
from ditjax.evaluation import inception_features
from ditjax.evaluation.metrics import feature_statistics, frechet_distance
from ditjax.sample_npz import sample_npz
from ditjax.training.config import ConfigError, validate_config
from ditjax.training.fid_eval import EVAL_KEY_OFFSET, load_reference_statistics
from ditjax.training.loop import train_and_evaluate
from inception_fixtures import write_random_pytorch_fid_checkpoint
from test_training_loop import (
    assert_bit_identical,
    host_state,
    loop_config,
    write_demo_latents,
)

pytestmark = pytest.mark.slow

NUM_SAMPLES = 5  # not a multiple of the chunk: the last chunk is padded


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory) -> str:
    return write_demo_latents(tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_files")
    inception = write_random_pytorch_fid_checkpoint(root / "inception.pth", seed=0)
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(2048, 64)) * 0.1
    reference = root / "ref_stats.npz"
    np.savez(
        reference,
        mu=rng.normal(size=2048) * 0.1,
        sigma=factor @ factor.T + 0.01 * np.eye(2048),
    )
    return str(reference), str(inception)


def eval_config(latent_dir, eval_files, **overrides):
    reference, inception = eval_files
    fields = {
        "total_steps": 4,
        "checkpoint_every": 4,
        "eval_every": 4,
        "eval_num_samples": NUM_SAMPLES,
        "eval_reference": reference,
        "eval_inception": inception,
        "eval_sampler": "ddim",
        "eval_steps": 3,
        "eval_cfg_scale": 2.0,
        "eval_guidance": "all",
        "eval_per_device_batch": 2,
    }
    return loop_config(latent_dir, **{**fields, **overrides})


def test_logged_fid_is_that_of_the_sample_file_and_training_is_unchanged(
    latent_dir, eval_files, tmp_path
):
    evaluated = train_and_evaluate(eval_config(latent_dir, eval_files), str(tmp_path / "eval"))
    plain = train_and_evaluate(
        eval_config(latent_dir, eval_files, eval_every=0), str(tmp_path / "plain")
    )
    assert_bit_identical(host_state(evaluated), host_state(plain))
    assert "fid" not in plain.metrics
    fid = evaluated.metrics["fid"]
    assert np.isfinite(fid) and fid > 0
    assert np.isfinite(evaluated.metrics["inception_score"])
    assert evaluated.metrics["inception_score"] >= 1.0 - 1e-6

    # The same samples, written by the sampling command from the saved EMA weights.
    out = tmp_path / "samples.npz"
    sample_npz(
        str(tmp_path / "eval"),
        str(out),
        NUM_SAMPLES,
        per_device_batch=3,
        cfg_scale=2.0,
        guidance="all",
        sampler="ddim",
        steps=3,
        seed=loop_config(latent_dir).seed + EVAL_KEY_OFFSET,
        progress=False,
    )
    images = np.load(out)["arr_0"]
    features = inception_features(load_pytorch_fid_inception(eval_files[1]), images)
    mu, sigma = feature_statistics(np.asarray(features["pool"], np.float64))
    expected = frechet_distance(mu, sigma, *load_reference_statistics(eval_files[0]))
    np.testing.assert_allclose(fid, expected, rtol=1e-3)


def test_eval_fields_are_checked_before_training(latent_dir, eval_files, tmp_path):
    cases = [
        ({"eval_reference": ""}, "eval_reference"),
        ({"eval_inception": str(tmp_path / "missing.pth")}, "eval_inception"),
        ({"eval_num_samples": 1}, "eval_num_samples"),
        ({"eval_sampler": "euler"}, "eval_sampler"),
        ({"eval_guidance": "none"}, "eval_guidance"),
        ({"eval_every": -1}, "eval_every"),
    ]
    for overrides, field in cases:
        config = eval_config(latent_dir, eval_files, **overrides)
        config.image_size = config.latent_size = 16
        config.latent_channels = 3
        config.num_classes = 10
        with pytest.raises(ConfigError, match=field):
            validate_config(config, num_devices=1)
    bad = tmp_path / "no_stats.npz"
    np.savez(bad, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="save_stats"):
        load_reference_statistics(str(bad))
