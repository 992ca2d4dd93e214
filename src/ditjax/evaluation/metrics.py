"""The ADM evaluator's sample-quality metrics on Inception features, as pure functions.

FID and sFID (`frechet_distance` of `feature_statistics` on the pool and spatial features),
Inception Score (`inception_score` on the logits) and improved precision / recall
(`precision_recall` on the pool features; Kynkäänniemi et al., arXiv 1904.06991). Statistics
and scores are numpy float64; the pairwise distances of precision / recall are jitted JAX.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special

# The ADM evaluator's constants: the eps added to both covariances when the product's square
# root is not finite, and the largest imaginary part on the diagonal of that root it accepts.
FID_EPS = 1e-6
FID_IMAGINARY_ATOL = 1e-3
# Rows are read this many at a time to keep float64 copies of 50K x 2048 features small.
_STATISTICS_CHUNK = 4096


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64 of features (N, D), N >= 2: the
    `np.mean(axis=0)` and `np.cov(rowvar=False)` of the ADM evaluator, in row chunks."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {features.shape}")
    n, d = features.shape
    total = np.zeros(d)
    for start in range(0, n, _STATISTICS_CHUNK):
        total += features[start : start + _STATISTICS_CHUNK].sum(axis=0, dtype=np.float64)
    mu = total / n
    scatter = np.zeros((d, d))
    for start in range(0, n, _STATISTICS_CHUNK):
        centred = features[start : start + _STATISTICS_CHUNK].astype(np.float64) - mu
        scatter += centred.T @ centred
    return mu, scatter / (n - 1)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = FID_EPS,
) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2) (mu (D,),
    sigma (D, D)): |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).

    As the ADM evaluator: `scipy.linalg.sqrtm(sigma1 @ sigma2)`; if that has non-finite
    entries, again with `eps` I added to both covariances; a complex root keeps its real part
    unless an imaginary part on its diagonal exceeds 1e-3, which raises ValueError.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be vectors of one length, got {mu1.shape} and {mu2.shape}")
    (d,) = mu1.shape
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}) to match the means, got {sigma.shape}")
        if not np.isfinite(sigma).all():
            raise ValueError(f"{name} has non-finite entries")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # A singular product is expected for few samples; the eps retry below handles it.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            warnings.warn(
                f"FID: sqrtm(sigma1 @ sigma2) is not finite (singular product); adding {eps} "
                "to the diagonal of both covariances",
                RuntimeWarning,
                stacklevel=2,
            )
            offset = np.eye(d) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=FID_IMAGINARY_ATOL):
            largest = np.max(np.abs(covmean.imag))
            raise ValueError(
                f"FID: the square root of sigma1 @ sigma2 has an imaginary component of "
                f"{largest:.3g} (above {FID_IMAGINARY_ATOL} on the diagonal)"
            )
        covmean = covmean.real
    if not np.isfinite(covmean).all():
        raise ValueError("FID: the square root of sigma1 @ sigma2 is not finite even with eps")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits: np.ndarray, num_splits: int = 10) -> float:
    """Inception Score of classifier logits (N, C): the mean over `num_splits` consecutive
    splits of exp(mean_x KL(p(y|x) || p(y))), p(y) the split's mean of p(y|x) = softmax.

    The ADM evaluator cuts its samples into consecutive splits of 5000, so 50K samples give
    its 10 splits exactly; here the N rows are cut into `num_splits` consecutive splits whose
    sizes differ by at most one (`np.array_split`), which at N = 50K is the same 10 x 5000.
    Computed from log-probabilities in float64, so a probability that underflows is exact 0.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {logits.shape}")
    if num_splits < 1 or len(logits) < num_splits:
        raise ValueError(
            f"inception_score needs 1 <= num_splits <= N, got num_splits={num_splits}, "
            f"N={len(logits)}"
        )
    if not np.isfinite(logits).all():
        raise ValueError("logits have non-finite entries")
    scores = []
    for part in np.array_split(scipy.special.log_softmax(logits, axis=1), num_splits):
        log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores))


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared Euclidean distances (A, B) between rows of a (A, D) and b (B, D), as the ADM
    evaluator computes them: |a|^2 - 2 a.b + |b|^2, clipped at 0."""
    cross = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    norms_a = jnp.sum(a * a, axis=1)[:, None]
    norms_b = jnp.sum(b * b, axis=1)[None, :]
    return jnp.maximum(norms_a - 2 * cross + norms_b, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _merge_nearest(
    nearest: jax.Array, rows: jax.Array, cols: jax.Array, cols_valid: jax.Array, k: int
) -> jax.Array:
    """The k + 1 smallest squared distances (R, k + 1), ascending, from each of `rows` to the
    points in `nearest` so far and to the valid `cols`."""
    distances = jnp.where(cols_valid[None, :], _squared_distances(rows, cols), jnp.inf)
    negated, _ = jax.lax.top_k(-jnp.concatenate([nearest, distances], axis=1), k + 1)
    return -negated


@jax.jit
def _block_membership(
    a: jax.Array, radii_a: jax.Array, b: jax.Array, radii_b: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Which rows of a (A, D) fall in some ball of b (centres b, squared radii (B,)), and
    which rows of b fall in some ball of a; boundaries count as inside."""
    distances = _squared_distances(a, b)
    a_in_b = jnp.any(distances <= radii_b[None, :], axis=1)
    b_in_a = jnp.any(distances <= radii_a[:, None], axis=0)
    return a_in_b, b_in_a


def _blocks(features: np.ndarray, batch_size: int, device: jax.Device):
    """(start, count, padded block (batch_size, D) float32 on `device`) over the rows."""
    for start in range(0, len(features), batch_size):
        block = np.asarray(features[start : start + batch_size], np.float32)
        count = len(block)
        if count < batch_size:
            block = np.pad(block, ((0, batch_size - count), (0, 0)))
        yield start, count, jax.device_put(block, device)


def manifold_radii(
    features: np.ndarray, k: int = 3, *, batch_size: int = 10000, device: jax.Device | None = None
) -> np.ndarray:
    """Squared distance (N,) float32 from each row of features (N, D) to its k-th nearest
    neighbour in the set, counting itself as the 0-th (ADM: index k of the sorted row).

    Distances are computed `batch_size` x `batch_size` at a time on `device` (default: this
    process's first device), keeping only the k + 1 nearest per row.
    """
    features = np.asarray(features)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if features.ndim != 2 or len(features) <= k:
        raise ValueError(f"features must be (N, D) with N > k = {k}, got shape {features.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = min(batch_size, len(features))
    device = device or jax.local_devices()[0]
    radii = np.empty(len(features), np.float32)
    for start, count, rows in _blocks(features, batch_size, device):
        nearest = jax.device_put(np.full((batch_size, k + 1), np.inf, np.float32), device)
        for _, col_count, cols in _blocks(features, batch_size, device):
            valid = jax.device_put(np.arange(batch_size) < col_count, device)
            nearest = _merge_nearest(nearest, rows, cols, valid, k=k)
        radii[start : start + count] = np.asarray(nearest[:count, k])
    return radii


def precision_recall(
    ref_features: np.ndarray,
    sample_features: np.ndarray,
    k: int = 3,
    *,
    batch_size: int = 10000,
    device: jax.Device | None = None,
) -> tuple[float, float]:
    """Improved precision and recall of samples (M, D) against reference features (N, D).

    Each point gets a ball of squared radius its `manifold_radii` (k-th neighbour within its
    own set). Precision: the fraction of samples inside some reference ball; recall: the
    fraction of references inside some sample ball. The ADM evaluator's recipe (squared
    distances, k = 3, `<=`), except that its distances are float16 where finite and these are
    float32. No N x M matrix is formed: `batch_size` x `batch_size` blocks on `device`.
    """
    ref_features, sample_features = np.asarray(ref_features), np.asarray(sample_features)
    if ref_features.ndim != 2 or sample_features.ndim != 2:
        raise ValueError(
            f"features must be (N, D), got {ref_features.shape} and {sample_features.shape}"
        )
    if ref_features.shape[1] != sample_features.shape[1]:
        raise ValueError(
            f"reference and sample features differ in width: {ref_features.shape[1]} vs "
            f"{sample_features.shape[1]}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = min(batch_size, max(len(ref_features), len(sample_features)))
    device = device or jax.local_devices()[0]
    ref_radii = manifold_radii(ref_features, k, batch_size=batch_size, device=device)
    sample_radii = manifold_radii(sample_features, k, batch_size=batch_size, device=device)

    def padded_radii(radii: np.ndarray, start: int, count: int) -> jax.Array:
        # Padding rows get radius -inf: a ball that holds nothing.
        block = np.full(batch_size, -np.inf, np.float32)
        block[:count] = radii[start : start + count]
        return jax.device_put(block, device)

    ref_in = np.zeros(len(ref_features), bool)
    sample_in = np.zeros(len(sample_features), bool)
    for ref_start, ref_count, refs in _blocks(ref_features, batch_size, device):
        ref_block_radii = padded_radii(ref_radii, ref_start, ref_count)
        for sample_start, sample_count, samples in _blocks(sample_features, batch_size, device):
            sample_block_radii = padded_radii(sample_radii, sample_start, sample_count)
            refs_covered, samples_covered = _block_membership(
                refs, ref_block_radii, samples, sample_block_radii
            )
            ref_in[ref_start : ref_start + ref_count] |= np.asarray(refs_covered[:ref_count])
            sample_in[sample_start : sample_start + sample_count] |= np.asarray(
                samples_covered[:sample_count]
            )
    return float(sample_in.mean()), float(ref_in.mean())
