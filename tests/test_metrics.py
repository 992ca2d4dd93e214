"""The ADM metric suite on small feature sets, against independent numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from ditjax.evaluation import metrics
from ditjax.evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    manifold_radii,
    precision_recall,
)


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _reference_fid(mu1, sigma1, mu2, sigma2) -> float:
    """tr sqrt(sigma1 sigma2) as the sum of square roots of the eigenvalues of the symmetric
    sqrt(sigma1) sigma2 sqrt(sigma1), which has the same spectrum."""
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_root = np.sum(np.sqrt(np.clip(inner, 0, None)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def _random_sets(seed: int = 0, n: int = 64, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d))
    a = rng.normal(size=(n, d)) @ mixing
    b = rng.normal(size=(n, d)) @ (mixing + 0.3 * rng.normal(size=(d, d))) + 0.5
    return a, b


def test_feature_statistics_match_numpy_in_chunks(monkeypatch):
    monkeypatch.setattr(metrics, "_STATISTICS_CHUNK", 5)
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(23, 6)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(x[:1])


def test_fid_matches_a_direct_computation():
    a, b = _random_sets()
    (mu1, s1), (mu2, s2) = _stats(a), _stats(b)
    fid = frechet_distance(mu1, s1, mu2, s2)
    direct = scipy.linalg.sqrtm(s1 @ s2)
    by_sqrtm = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(direct))
    assert fid > 1.0
    np.testing.assert_allclose(fid, by_sqrtm, rtol=1e-9)
    np.testing.assert_allclose(fid, _reference_fid(mu1, s1, mu2, s2), rtol=1e-7)


def test_fid_of_a_nearly_singular_covariance():
    a, b = _random_sets(seed=2)
    # One feature is another plus a 1e-6 wiggle: the covariances are nearly singular.
    a[:, -1] = a[:, 0] + 1e-6 * np.random.default_rng(3).normal(size=len(a))
    b[:, -1] = b[:, 0]
    (mu1, s1), (mu2, s2) = _stats(a), _stats(b)
    assert np.linalg.cond(s1) > 1e10
    fid = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(fid)
    np.testing.assert_allclose(fid, _reference_fid(mu1, s1, mu2, s2), rtol=1e-6)


def test_fid_is_symmetric_and_zero_for_identical_sets():
    a, b = _random_sets(seed=4)
    (mu1, s1), (mu2, s2) = _stats(a), _stats(b)
    np.testing.assert_allclose(
        frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1), rtol=1e-9
    )
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9 * np.trace(s1)


def test_fid_retries_with_eps_when_the_root_is_not_finite(monkeypatch):
    a, b = _random_sets(seed=5, d=4)
    (mu1, s1), (mu2, s2) = _stats(a), _stats(b)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm)
    with pytest.warns(RuntimeWarning, match="adding 0.01"):
        fid = frechet_distance(mu1, s1, mu2, s2, eps=0.01)
    offset = 0.01 * np.eye(4)
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    root = np.real(real_sqrtm(calls[1]))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root)
    np.testing.assert_allclose(fid, expected, rtol=1e-9)


def test_fid_imaginary_part_tolerance(monkeypatch):
    mu, sigma = np.zeros(3), np.eye(3)
    root = np.eye(3).astype(np.complex128)
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: root)
    root[0, 0] += 1e-4j  # within the evaluator's 1e-3: the real part is used
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-12)
    root[0, 0] += 0.1j
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(mu, sigma, mu, sigma)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 must be"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def _reference_is(logits: np.ndarray, split_size: int) -> float:
    """The improved-GAN recipe: softmax, then exp(mean KL) over consecutive splits."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for start in range(0, len(p), split_size):
        part = p[start : start + split_size]
        marginal = part.mean(axis=0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1))))
    return float(np.mean(scores))


def test_inception_score_matches_a_numpy_reference():
    logits = np.random.default_rng(6).normal(0, 3, size=(60, 30))
    score = inception_score(logits, num_splits=3)
    assert score > 1.5
    np.testing.assert_allclose(score, _reference_is(logits, 20), rtol=1e-10)
    # Splits of 12, 12 and 11 for N = 35.
    uneven = logits[:35]
    parts = [uneven[:12], uneven[12:24], uneven[24:]]
    expected = np.mean([_reference_is(part, len(part)) for part in parts])
    np.testing.assert_allclose(inception_score(uneven, num_splits=3), expected, rtol=1e-10)


def test_inception_score_of_uniform_and_of_confident_balanced_logits():
    assert inception_score(np.zeros((40, 1008)), num_splits=4) == pytest.approx(1.0, abs=1e-12)
    classes = np.tile(np.arange(10), 4)  # every split of 20 holds each class twice
    confident = np.zeros((40, 1008))
    confident[np.arange(40), classes] = 60.0
    assert inception_score(confident, num_splits=2) == pytest.approx(10.0, rel=1e-9)


def test_inception_score_rejects_too_few_rows():
    with pytest.raises(ValueError, match="num_splits <= N"):
        inception_score(np.zeros((5, 8)), num_splits=10)


def _brute_force_pr(ref: np.ndarray, samples: np.ndarray, k: int) -> tuple[float, float]:
    def squared(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    ref_radii = np.sort(squared(ref, ref), axis=1)[:, k]
    sample_radii = np.sort(squared(samples, samples), axis=1)[:, k]
    cross = squared(ref, samples)  # (N ref, M samples)
    precision = np.mean([np.any(cross[:, j] <= ref_radii) for j in range(len(samples))])
    recall = np.mean([np.any(cross[i, :] <= sample_radii) for i in range(len(ref))])
    return float(precision), float(recall)


def test_manifold_radii_match_brute_force_in_blocks():
    x = np.random.default_rng(7).normal(size=(40, 8))
    expected = np.sort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, 3]
    np.testing.assert_allclose(manifold_radii(x, 3, batch_size=7), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="N > k"):
        manifold_radii(x[:3], 3)


def test_precision_recall_match_brute_force_in_blocks():
    rng = np.random.default_rng(8)
    ref = rng.normal(size=(40, 8))
    samples = 1.3 * rng.normal(size=(33, 8)) + 0.4
    expected = _brute_force_pr(ref, samples, 3)
    assert all(0.0 < value < 1.0 for value in expected)
    assert precision_recall(ref, samples, 3, batch_size=7) == expected
    assert precision_recall(ref, samples, 3, batch_size=1000) == expected
    assert precision_recall(ref, samples, 5, batch_size=9) == _brute_force_pr(ref, samples, 5)


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(9).normal(size=(40, 8))
    assert precision_recall(x, x.copy(), batch_size=6) == (1.0, 1.0)


def test_precision_recall_rejects_mismatched_widths():
    with pytest.raises(ValueError, match="width"):
        precision_recall(np.zeros((10, 4)), np.zeros((10, 5)))
