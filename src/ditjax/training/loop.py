"""The training loop: set up, resume, step, log, checkpoint, preview."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers, parameter_overview, periodic_actions
from etils import epath

from ditjax.autoencoder import create_autoencoder
from ditjax.data import make_train_iterator, read_latent_info
from ditjax.data.storage import write_text_atomically
from ditjax.diffusion import create_diffusion
from ditjax.image_grid import make_grid, save_png
from ditjax.parallel import create_mesh, make_global_batch
from ditjax.training.checkpoint import Checkpointer
from ditjax.training.compatibility import check_resume_compatible
from ditjax.training.config import (
    ConfigError,
    build_model,
    resolve_dataset_fields,
    validate_config,
)
from ditjax.training.fid_eval import make_fid_evaluator
from ditjax.training.optimizer import learning_rate_schedule, make_optimizer
from ditjax.training.preemption import PreemptionWatcher
from ditjax.training.prefetch import DevicePrefetcher
from ditjax.training.preview import make_preview_fn
from ditjax.training.state import (
    abstract_train_state,
    create_train_state,
    sharded_target,
    state_shardings,
)
from ditjax.training.step import jit_train_step, make_train_step
from ditjax.training.time_limit import TimeLimit


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped without saving the bad state."""


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    step: int
    metrics: dict[str, float]
    checkpoint_dir: str
    preview_path: str | None
    preempted: bool = False
    state: Any = None
    time_limited: bool = False  # stopped by config.time_limit_minutes before total_steps


def _to_host(metrics: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(metrics)
    return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop_at_step: int | None = None,
    watcher: PreemptionWatcher | None = None,
) -> TrainResult:
    """Trains (or resumes) the run in `workdir` up to `config.total_steps`.

    `stop_at_step` ends the loop early after checkpointing that step, as an interruption
    would. On SIGTERM (see PreemptionWatcher) the run saves at the next step and returns
    with `preempted=True`; once `config.time_limit_minutes` of this call have passed it saves
    and returns with `time_limited=True`.
    """
    # Check everything cheap before any compilation; the dataset fills the fields left at 0.
    if not config.dataset_dir:
        raise ConfigError("dataset_dir", "must name a latent dataset directory")
    config = resolve_dataset_fields(config, read_latent_info(config.dataset_dir))
    mesh_shape = validate_config(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    autoencoder = create_autoencoder(config.autoencoder)
    model = build_model(config)
    latent_shape = (config.latent_size, config.latent_size, config.latent_channels)
    workdir_path = epath.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0

    # Set up mesh, state layout, step function.
    mesh = create_mesh(mesh_shape)
    optimizer = make_optimizer(config)
    learning_rate_fn = learning_rate_schedule(config)
    diffusion = create_diffusion(
        "", learn_sigma=config.learn_sigma, diffusion_steps=config.diffusion_steps
    )
    abstract_state, boxed = abstract_train_state(model, optimizer, config.seed, latent_shape)
    shardings = state_shardings(boxed, mesh)
    step_fn = make_train_step(
        model,
        diffusion,
        optimizer,
        ema_decay=config.ema_decay,
        latent_scale=autoencoder.scale,
        learning_rate_fn=learning_rate_fn,
        min_snr_gamma=config.min_snr_gamma,
    )
    train_step = jit_train_step(step_fn, shardings, mesh)

    # Data and checkpoints: resume from the newest good checkpoint if there is one.
    data_iterator = make_train_iterator(
        config.dataset_dir,
        global_batch_size=config.global_batch_size,
        seed=config.seed,
        worker_count=config.data_workers,
        random_flip=config.random_flip,
    )
    checkpointer = Checkpointer(
        os.fspath(workdir_path / "checkpoints"),
        keep=config.keep_checkpoints,
        keep_every=config.keep_every,
    )
    target = sharded_target(abstract_state, shardings)
    config_snapshot = config.to_dict()
    saved_config = checkpointer.latest_config()
    if saved_config is not None:
        check_resume_compatible(saved_config, config_snapshot)
    restored = checkpointer.restore_latest_good(target, data_iterator)
    if restored is None:
        state, _ = create_train_state(model, optimizer, config.seed, latent_shape, mesh)
        logging.info("starting a new run in %s", workdir)
    else:
        start, state = restored
        logging.info("resumed from step %d in %s", start, workdir)
    start_step = int(jax.device_get(state.step))

    writer = metric_writers.create_default_writer(os.fspath(workdir_path), just_logging=not is_main)
    if start_step == 0 and is_main:
        parameter_overview.log_parameter_overview(state.params)
        writer.write_hparams({k: v for k, v in config_snapshot.items() if _is_scalar(v)})
        config_text = config.to_json_best_effort(indent=2)
        write_text_atomically(workdir_path / "config.json", config_text, tag="main")

    hooks: list[Any] = []
    if is_main:
        hooks.append(
            periodic_actions.ReportProgress(
                num_train_steps=config.total_steps, writer=writer, every_steps=config.log_every
            )
        )
        if config.profile_steps:
            hooks.append(
                periodic_actions.Profile(
                    logdir=os.fspath(workdir_path),
                    num_profile_steps=config.profile_steps,
                    first_profile=start_step + config.log_every,
                    every_secs=None,
                )
            )

    preview = None
    if config.sample_every:
        preview = make_preview_fn(
            model,
            autoencoder,
            latent_shape=latent_shape,
            sampler_spec=config.preview_sampler,
            cfg_scale=config.preview_cfg_scale,
            diffusion_steps=config.diffusion_steps,
        )
    # Reads the reference statistics and Inception weights now, before the first step.
    evaluate = None
    if config.get("eval_every", 0):
        evaluate = make_fid_evaluator(
            config, model, autoencoder, latent_shape=latent_shape, mesh=mesh
        )
    labels = np.asarray(config.preview_labels, np.int32)
    preview_key = jax.random.key(config.seed + 1)
    preview_path = None

    def write_preview(step: int) -> str | None:
        images = np.asarray(jax.device_get(preview(state.ema_params, labels, preview_key)))
        grid = make_grid(images, columns=min(len(labels), 8))
        writer.write_images(step, {"preview": grid[None]})
        if not is_main:
            return None
        return save_png(grid, os.fspath(workdir_path / "previews" / f"step_{step:07d}.png"), 4)

    # The loop.
    last_step = min(config.total_steps, stop_at_step or config.total_steps)
    pending: list[dict[str, jax.Array]] = []
    last_metrics: dict[str, float] = {}
    log_start = time.perf_counter()
    step = start_step
    preempted = time_limited = False
    watcher = watcher or PreemptionWatcher()
    time_limit = TimeLimit(config.time_limit_minutes, check_every=config.log_every)
    # Batch k + 1 is read and on its way to the devices while step k runs; a checkpoint
    # records the data position after the batches the saved state has consumed.
    batches = DevicePrefetcher(
        data_iterator, lambda local: make_global_batch(local, mesh), max(last_step - step, 0)
    )
    try:
        while step < last_step:
            batch, data_position = next(batches)
            state, metrics = train_step(state, batch)
            step += 1
            pending.append(metrics)
            for hook in hooks:
                hook(step)
            preempted = watcher.should_stop(step)
            time_limited = not preempted and step < last_step and time_limit.reached(step)
            stopping = preempted or time_limited
            save_now = step % config.checkpoint_every == 0 or step == last_step or stopping
            if step % config.log_every == 0 or save_now:
                last_metrics = _to_host(pending)
                if not all(np.isfinite(v) for v in last_metrics.values()):
                    raise NonFiniteLossError(
                        f"loss became non-finite by step {step} ({last_metrics}); the last good "
                        f"checkpoint is step {checkpointer.latest_step()} in "
                        f"{checkpointer.directory}"
                    )
                elapsed = time.perf_counter() - log_start
                last_metrics["images_per_sec"] = (
                    len(pending) * config.global_batch_size / max(elapsed, 1e-9)
                )
                writer.write_scalars(step, last_metrics)
                pending, log_start = [], time.perf_counter()
            if save_now:
                checkpointer.save(step, state, data_position, config_snapshot)
            if (
                preview is not None
                and not preempted
                and (step % config.sample_every == 0 or step == last_step or time_limited)
            ):
                preview_path = write_preview(step) or preview_path
            if evaluate is not None and not preempted and step % config.eval_every == 0:
                scores = evaluate(state.ema_params)
                logging.info("step %d: %s", step, scores)
                writer.write_scalars(step, scores)
                last_metrics = {**last_metrics, **scores}
            if preempted:
                logging.warning("stopping at step %d after saving a checkpoint", step)
                break
            if time_limited:
                logging.warning(
                    "time limit of %g minutes reached: stopping at step %d of %d after saving "
                    "a checkpoint",
                    config.time_limit_minutes,
                    step,
                    last_step,
                )
                break
    finally:
        batches.close()
        checkpointer.close()
        writer.flush()
        writer.close()
        # Last: a SIGTERM during the final wait for the async save is still only logged.
        watcher.close()
    return TrainResult(
        step=step,
        metrics=last_metrics,
        checkpoint_dir=os.fspath(checkpointer.directory),
        preview_path=preview_path,
        preempted=preempted,
        state=state,
        time_limited=time_limited,
    )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool)
