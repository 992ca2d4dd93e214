"""`python -m ditjax.evaluate --ref=REF --samples=SAMPLES --inception=pt_inception.pth`.

The ADM evaluator's metrics of a sample set against a reference set: FID, sFID, Inception
Score, precision and recall. REF and SAMPLES are `.npz` files in the ADM format (`arr_0`
uint8 (N, H, W, 3), as `python -m ditjax.sample --num_samples=N` writes; precomputed `mu`,
`sigma`, `mu_s`, `sigma_s` are used when present) or folders of PNG / JPEG images. Inception
runs on every device of every process; the weights are pytorch-fid's `.pth`.

`--save_stats=ref_stats.npz` with only `--ref` computes the reference statistics (and pool
features, for precision / recall) once and exits; later runs pass that file as `--ref`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from ditjax.atomic_files import write_json
from ditjax.evaluation.features import (
    EvaluationSource,
    ReferenceStats,
    extract_features,
    open_source,
    reference_stats,
    save_reference_stats,
)
from ditjax.evaluation.metrics import frechet_distance, inception_score, precision_recall
from ditjax.host_memory import retain_freed_host_memory
from ditjax.parallel import create_mesh, initialize_distributed, replicated

# The evaluator's own flags, apart from absl's global ones, so that `main(argv)` can run
# in-process next to other entry points.
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "ref", None, "Reference batch: ADM .npz, statistics .npz or image folder.", flag_values=FLAGS
)
flags.DEFINE_string("samples", None, "Sample batch: ADM .npz or image folder.", flag_values=FLAGS)
flags.DEFINE_string(
    "inception", None, "pytorch-fid Inception weights (pt_inception-*.pth).", flag_values=FLAGS
)
flags.DEFINE_string("out", None, "Write the metrics to this JSON file too.", flag_values=FLAGS)
flags.DEFINE_integer(
    "batch_size", 256, "Images per Inception step, over all devices.", flag_values=FLAGS
)
flags.DEFINE_string(
    "save_stats", None, "Write the reference statistics to this .npz.", flag_values=FLAGS
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for clusters JAX cannot detect.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_processes", None, "Processes in the job.", flag_values=FLAGS)
flags.DEFINE_integer("process_id", None, "This process's index in the job.", flag_values=FLAGS)

IS_SPLITS = 10
PR_NEIGHBOURS = 3
METRIC_NAMES = {
    "inception_score": "Inception Score",
    "fid": "FID",
    "sfid": "sFID",
    "precision": "Precision",
    "recall": "Recall",
}


class UsageError(ValueError):
    """A flag or input that cannot work, found before any expensive work."""


def _check_readable_file(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"--{flag}: {path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"--{flag}: {path} is not readable")


def _open(flag: str, path: str, *, need_images: bool) -> EvaluationSource:
    try:
        return open_source(path, need_images=need_images)
    except (OSError, ValueError) as error:
        raise UsageError(f"--{flag}: {error}") from None


def _check_inputs() -> tuple[EvaluationSource, EvaluationSource | None]:
    """Every flag and input checked, without decoding images or loading Inception."""
    if not FLAGS.ref:
        raise UsageError("--ref is required")
    if not FLAGS.samples and not FLAGS.save_stats:
        raise UsageError("--samples is required (or --save_stats, to cache the --ref statistics)")
    if FLAGS.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {FLAGS.batch_size}")
    if FLAGS.save_stats and not FLAGS.save_stats.endswith(".npz"):
        raise UsageError(f"--save_stats must end in .npz, got {FLAGS.save_stats!r}")
    for flag, path in (("out", FLAGS.out), ("save_stats", FLAGS.save_stats)):
        if path and os.path.isdir(path):
            raise UsageError(f"--{flag}: {path} is a directory")
    ref = _open("ref", FLAGS.ref, need_images=False)
    has_pool = ref.stats is not None and ref.stats.pool is not None
    ref_count = len(ref.stats.pool) if has_pool else ref.num_images
    if ref_count is None:
        raise UsageError(
            f"--ref: {FLAGS.ref} has statistics but neither arr_0 images nor pool features, "
            "which precision and recall need"
        )
    if ref_count <= PR_NEIGHBOURS:
        raise UsageError(f"--ref: {FLAGS.ref} has {ref_count} images; at least 4 are needed")
    samples = None
    if FLAGS.samples:
        samples = _open("samples", FLAGS.samples, need_images=True)
        if samples.num_images < max(IS_SPLITS, PR_NEIGHBOURS + 1):
            raise UsageError(
                f"--samples: {FLAGS.samples} has {samples.num_images} images; at least "
                f"{IS_SPLITS} are needed (Inception Score uses {IS_SPLITS} splits)"
            )
    if _needs_inception(ref, samples):
        if not FLAGS.inception:
            raise UsageError("--inception is required (pytorch-fid's pt_inception-*.pth)")
        _check_readable_file("inception", FLAGS.inception)
    return ref, samples


def _needs_inception(ref: EvaluationSource, samples: EvaluationSource | None) -> bool:
    return samples is not None or ref.stats is None or ref.stats.pool is None


def _inception_features_fn(path: str, mesh: jax.sharding.Mesh) -> Callable:
    """features_fn(images uint8 (B, H, W, 3)) -> {pool, spatial, logits} with the weights at
    `path` replicated on every device of `mesh`."""
    from ditjax.convert import load_pytorch_fid_inception
    from ditjax.evaluation.inception import inception_features

    sharding = replicated(mesh)
    params = jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda index: np.asarray(x)[index]
        ),
        load_pytorch_fid_inception(path),
    )
    return lambda images: inception_features(params, images)


def _statistics(
    source: EvaluationSource,
    features_fn: Callable | None,
    mesh: jax.sharding.Mesh,
    *,
    need_logits: bool,
    desc: str,
) -> tuple[ReferenceStats, dict[str, np.ndarray]]:
    """A source's statistics, its precomputed ones where it has them as the ADM evaluator
    does, and its features; nothing is extracted when the file holds statistics and pool
    features and no logits are needed."""
    stored = source.stats
    if stored is not None and stored.pool is not None and not need_logits:
        return stored, {}
    features = extract_features(
        features_fn, source.images, batch_size=FLAGS.batch_size, mesh=mesh, desc=desc
    )
    computed = reference_stats(features)
    if stored is None:
        return computed, features
    if stored.mu.shape != computed.mu.shape or stored.mu_s.shape != computed.mu_s.shape:
        raise ValueError(
            f"{source.path}: its mu {stored.mu.shape} and mu_s {stored.mu_s.shape} do not "
            f"match the Inception features {computed.mu.shape} and {computed.mu_s.shape}"
        )
    return dataclasses.replace(stored, pool=computed.pool), features


def compute_metrics(
    ref: ReferenceStats, samples: ReferenceStats, sample_logits: np.ndarray
) -> dict[str, float]:
    """FID, sFID, Inception Score, precision and recall, as the ADM evaluator reports them."""
    if ref.mu.shape != samples.mu.shape or ref.mu_s.shape != samples.mu_s.shape:
        raise ValueError(
            f"reference statistics are {ref.mu.shape} / {ref.mu_s.shape} (pool / spatial), "
            f"but the samples' are {samples.mu.shape} / {samples.mu_s.shape}"
        )
    precision, recall = precision_recall(ref.pool, samples.pool, PR_NEIGHBOURS)
    return {
        "inception_score": inception_score(sample_logits, IS_SPLITS),
        "fid": frechet_distance(samples.mu, samples.sigma, ref.mu, ref.sigma),
        "sfid": frechet_distance(samples.mu_s, samples.sigma_s, ref.mu_s, ref.sigma_s),
        "precision": precision,
        "recall": recall,
    }


def format_table(metrics: dict[str, float]) -> str:
    """The metrics as a two-column text table."""
    width = max(len(name) for name in METRIC_NAMES.values())
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 10}"]
    lines += [f"{METRIC_NAMES[key]:<{width}}  {metrics[key]:.4f}" for key in METRIC_NAMES]
    return "\n".join(lines)


def _run(ref_source: EvaluationSource, sample_source: EvaluationSource | None) -> dict | None:
    first = jax.process_index() == 0
    mesh = create_mesh((-1, 1))
    features_fn = None
    if _needs_inception(ref_source, sample_source):
        features_fn = _inception_features_fn(FLAGS.inception, mesh)
    ref, _ = _statistics(ref_source, features_fn, mesh, need_logits=False, desc="reference")
    if FLAGS.save_stats:
        if first:
            save_reference_stats(FLAGS.save_stats, ref)
            print(f"wrote reference statistics to {FLAGS.save_stats}")
        multihost_utils.sync_global_devices("ditjax.evaluate:saved")
    if sample_source is None:
        return None
    samples, features = _statistics(
        sample_source, features_fn, mesh, need_logits=True, desc="samples"
    )
    metrics = compute_metrics(ref, samples, features["logits"])
    report = {
        **metrics,
        "ref": os.path.abspath(FLAGS.ref),
        "samples": os.path.abspath(FLAGS.samples),
        "num_ref": len(ref.pool),
        "num_samples": len(samples.pool),
    }
    if first:
        print(format_table(metrics))
        if FLAGS.out:
            write_json(FLAGS.out, report)
            print(f"wrote {FLAGS.out}")
    multihost_utils.sync_global_devices("ditjax.evaluate:done")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the evaluator on `argv` (program name first, then flags); returns the exit
    status: 0, or 2 for a bad flag or input (with the reason on stderr)."""
    argv = list(sys.argv if argv is None else argv)
    if any(arg in ("-h", "--help", "-help") for arg in argv[1:]):
        print(__doc__)
        print(FLAGS.get_help())
        return 0
    FLAGS.unparse_flags()
    try:
        rest = FLAGS(argv)
        if len(rest) > 1:
            raise UsageError(f"unexpected arguments: {rest[1:]}")
        ref, samples = _check_inputs()
    except (flags.Error, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        _run(ref, samples)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    retain_freed_host_memory()
    sys.exit(main())
