"""The training loop end to end: checkpoints, exact resume, preemption, faults, previews."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from ditjax.autoencoder import create_autoencoder
from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, generate_demo_images
from ditjax.data.extract import extract_latents
from ditjax.data.sources import open_source
from ditjax.sample import sample_images
from ditjax.training.config import DATASET_FIELDS, ConfigError
from ditjax.training.loop import NonFiniteLossError, train_and_evaluate
from ditjax.training.preemption import PreemptionWatcher
from training_fixtures import tiny_config

IMAGE_SIZE = 16


def write_image_folder(root: pathlib.Path, per_class: int = 4, nan: bool = False) -> pathlib.Path:
    images, labels = generate_demo_images(per_class, seed=3)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE)).save(folder / f"{i}.png")
    return root


pytestmark = pytest.mark.slow


def write_demo_latents(root: pathlib.Path) -> str:
    """A pixel-space latent dataset of `write_image_folder`'s images under `root`; its path."""
    out = root / "latents"
    extract_latents(
        open_source(f"folder:{write_image_folder(root / 'images')}"),
        create_autoencoder("identity"),
        IMAGE_SIZE,
        str(out),
        batch_size=16,
        progress=False,
    )
    return str(out)


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory) -> str:
    return write_demo_latents(tmp_path_factory.mktemp("latents"))


def loop_config(latent_dir: str, **overrides):
    config = tiny_config()
    config.latent_size = IMAGE_SIZE
    config.dataset_dir = latent_dir
    config.global_batch_size = 8
    config.total_steps = 6
    config.log_every = 2
    config.checkpoint_every = 3
    config.keep_checkpoints = 5
    config.sample_every = 0
    config.warmup_steps = 2
    config.ema_decay = 0.9
    for key, value in overrides.items():
        config[key] = value
    return config


def host_state(result):
    return jax.device_get(
        {
            "params": result.state.params,
            "ema": result.state.ema_params,
            "opt": result.state.opt_state,
            "rng": result.state.rng,
            "step": result.state.step,
        }
    )


def assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(latent_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = train_and_evaluate(loop_config(latent_dir), str(workdir))
    return workdir, host_state(result), result


def test_run_writes_checkpoints_and_metrics(uninterrupted):
    workdir, state, result = uninterrupted
    assert result.step == 6 and int(state["step"]) == 6
    assert sorted(os.listdir(workdir / "checkpoints"))[:2] == ["3", "6"]
    assert (workdir / "checkpoints" / "6" / "data").is_dir()  # data iterator position saved
    assert (workdir / "config.json").exists()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    assert {"loss", "mse", "vb", "grad_norm", "learning_rate"} <= set(result.metrics)
    assert np.isfinite(result.metrics["loss"])


def test_resume_is_bit_identical(latent_dir, uninterrupted, tmp_path):
    _, expected, _ = uninterrupted
    config = loop_config(latent_dir)
    first = train_and_evaluate(config, str(tmp_path), stop_at_step=3)
    assert first.step == 3
    resumed = train_and_evaluate(config, str(tmp_path))
    assert resumed.step == 6
    assert_bit_identical(host_state(resumed), expected)


class SigtermAt(PreemptionWatcher):
    """Sends this process a real SIGTERM after step `at`."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def should_stop(self, step: int) -> bool:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().should_stop(step)


def test_sigterm_saves_and_resume_matches(latent_dir, uninterrupted, tmp_path):
    _, expected, _ = uninterrupted
    config = loop_config(latent_dir)
    stopped = train_and_evaluate(config, str(tmp_path), watcher=SigtermAt(4))
    assert stopped.preempted and stopped.step == 4
    assert "4" in os.listdir(tmp_path / "checkpoints")
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored
    resumed = train_and_evaluate(config, str(tmp_path))
    assert resumed.step == 6 and not resumed.preempted
    assert_bit_identical(host_state(resumed), expected)


def test_time_limit_saves_and_resume_matches(latent_dir, uninterrupted, tmp_path):
    _, expected, _ = uninterrupted
    # A limit shorter than any step: the run stops, with a checkpoint, after its first step.
    config = loop_config(latent_dir, time_limit_minutes=1e-9, sample_every=100)
    stopped = train_and_evaluate(config, str(tmp_path))
    assert stopped.time_limited and not stopped.preempted and stopped.step == 1
    assert "1" in os.listdir(tmp_path / "checkpoints")
    assert stopped.preview_path is not None and "step_0000001" in stopped.preview_path
    resumed = train_and_evaluate(loop_config(latent_dir), str(tmp_path))
    assert resumed.step == 6 and not resumed.time_limited
    assert_bit_identical(host_state(resumed), expected)


def test_negative_time_limit_is_refused_before_training(latent_dir, tmp_path):
    with pytest.raises(ConfigError, match="time_limit_minutes"):
        train_and_evaluate(loop_config(latent_dir, time_limit_minutes=-1.0), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_corrupt_latest_checkpoint_falls_back(latent_dir, uninterrupted, tmp_path, caplog):
    _, expected, _ = uninterrupted
    config = loop_config(latent_dir)
    train_and_evaluate(config, str(tmp_path))
    latest = tmp_path / "checkpoints" / "6" / "state"
    corrupted = 0
    for path in latest.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
            corrupted += 1
    assert corrupted > 0
    with caplog.at_level("ERROR"):
        result = train_and_evaluate(config, str(tmp_path))
    assert str(tmp_path / "checkpoints" / "6") in caplog.text
    assert result.step == 6  # retrained 4..6 from the good step-3 checkpoint
    assert_bit_identical(host_state(result), expected)


def test_incompatible_config_is_refused_compatible_is_allowed(latent_dir, tmp_path):
    config = loop_config(latent_dir)
    train_and_evaluate(config, str(tmp_path), stop_at_step=3)
    deeper = loop_config(latent_dir)
    deeper.model_overrides.depth = 3
    with pytest.raises(ConfigError, match=r"config\.model_overrides"):
        train_and_evaluate(deeper, str(tmp_path))
    # Switching the clip on or off changes the optimizer state's structure.
    toggled = loop_config(latent_dir, grad_clip_norm=0.0 if config.grad_clip_norm else 1.0)
    with pytest.raises(ConfigError, match=r"config\.grad_clip_norm"):
        train_and_evaluate(toggled, str(tmp_path))
    faster = loop_config(latent_dir, learning_rate=5e-4, total_steps=4, log_every=1)
    assert train_and_evaluate(faster, str(tmp_path)).step == 4


def test_dataset_fields_are_resolved_saved_and_checked(latent_dir, tmp_path):
    config = loop_config(latent_dir, total_steps=2, checkpoint_every=2)
    for field in DATASET_FIELDS:
        config[field] = 0
    train_and_evaluate(config, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    expected = {"image_size": IMAGE_SIZE, "latent_size": IMAGE_SIZE, "latent_channels": 3}
    assert {field: saved[field] for field in expected} == expected
    assert saved["num_classes"] == len(DEMO_CLASS_NAMES)
    images = sample_images(str(tmp_path), [0, 9], sampler="ddim", steps=2)
    assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)

    # Resuming with the same values set explicitly is the same run; other values are not.
    explicit = loop_config(latent_dir, total_steps=3, image_size=IMAGE_SIZE, num_classes=10)
    assert train_and_evaluate(explicit, str(tmp_path)).step == 3
    wider = loop_config(latent_dir, total_steps=4, num_classes=12)
    with pytest.raises(ConfigError, match=r"config\.num_classes: the checkpoint"):
        train_and_evaluate(wider, str(tmp_path))
    mismatched = loop_config(latent_dir, latent_channels=4)
    with pytest.raises(ConfigError, match=r"config\.latent_channels: 4, but dataset"):
        train_and_evaluate(mismatched, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(latent_dir, tmp_path):
    config = loop_config(latent_dir, learning_rate=1e30, warmup_steps=0, log_every=1)
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train_and_evaluate(config, str(tmp_path))
    steps = os.listdir(tmp_path / "checkpoints") if (tmp_path / "checkpoints").exists() else []
    assert all(not s.isdigit() or int(s) < 6 for s in steps)


def test_preview_png_is_written(latent_dir, tmp_path):
    config = loop_config(
        latent_dir, total_steps=2, sample_every=2, preview_sampler="ddim4", preview_labels=(0, 1, 2)
    )
    result = train_and_evaluate(config, str(tmp_path))
    assert result.preview_path is not None
    image = np.asarray(Image.open(result.preview_path))
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0


def test_train_command_reports_bad_config(latent_dir, tmp_path):
    config_file = pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ditjax.train",
            f"--config={config_file}",
            f"--workdir={tmp_path}",
            "--config.global_batch_size=-4",
            f"--config.dataset_dir={latent_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "config.global_batch_size" in out.stderr
