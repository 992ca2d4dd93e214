"""The FID Inception: parity with a PyTorch reference, the TF graph's resize and scale, and
the pytorch-fid weight converter."""

import jax
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from ditjax.convert import (
    load_pytorch_fid_inception,
    pytorch_fid_inception_params,
)
from ditjax.evaluation import inception_features, init_inception_params
from ditjax.evaluation.inception import preprocess, resize_bilinear_tf1
from inception_fixtures import (
    random_pytorch_fid_state_dict,
    torch_fid_inception,
    write_random_pytorch_fid_checkpoint,
)


def structured_images(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (n, height, width, 3): a different colour ramp, blob and noise per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    images = []
    for _ in range(n):
        a, b = rng.uniform(-1, 1, (2, 3))
        cy, cx, r = rng.uniform(0.2, 0.8, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.1 * r))
        image = 128 + 100 * (a * yy[..., None] + b * xx[..., None]) / 2
        image = image + 80 * blob[..., None] * rng.uniform(-1, 1, 3)
        images.append(image + rng.normal(0, 20, (height, width, 3)))
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def legacy_resize_reference(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 ResizeBilinear (align_corners=False, no half-pixel centres): the kernel takes the
    source coordinate `out * (in / out_size)` in float32, the rest here is float64."""
    images = images.astype(np.float64)
    _, h, w, _ = images.shape

    def axis(size_in, size_out):
        source = np.arange(size_out, dtype=np.float32) * np.float32(size_in / size_out)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, size_in - 1), source.astype(np.float64) - low

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    fy, fx = fy[None, :, None, None], fx[None, None, :, None]
    rows0, rows1 = images[:, y0], images[:, y1]
    return (
        (1 - fy) * (1 - fx) * rows0[:, :, x0]
        + (1 - fy) * fx * rows0[:, :, x1]
        + fy * (1 - fx) * rows1[:, :, x0]
        + fy * fx * rows1[:, :, x1]
    )


def torch_features(model, images_float_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """The reference network on images already at 299 x 299 and scaled."""
    x = torch.from_numpy(np.ascontiguousarray(images_float_nhwc, np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(x).items()}


@pytest.fixture(scope="module")
def state_dict():
    return random_pytorch_fid_state_dict(seed=0)


@pytest.fixture(scope="module")
def torch_model(state_dict):
    return torch_fid_inception(state_dict)


@pytest.fixture(scope="module")
def params(state_dict):
    return pytorch_fid_inception_params({k: v.numpy() for k, v in state_dict.items()})


def assert_features_close(ours, reference):
    assert set(ours) == {"pool", "spatial", "logits"}
    for name, expected in reference.items():
        got = np.asarray(ours[name])
        assert got.dtype == np.float32 and got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.fixture(scope="module")
def images_299():
    return structured_images(3, 299, 299, seed=1)


def test_features_match_the_torch_reference_at_299(params, torch_model, images_299):
    images = images_299
    ours = inception_features(params, images)
    reference = torch_features(torch_model, (images.astype(np.float32) - 128) / 128)
    assert {k: v.shape for k, v in reference.items()} == {
        "pool": (3, 2048),
        "spatial": (3, 17 * 17 * 7),
        "logits": (3, 1008),
    }
    # O(1) activations that differ between images: the comparison is not of near-zeros.
    for name, value in reference.items():
        assert 0.1 < np.abs(value).mean() < 10, name
        assert np.abs(value[0] - value[1]).mean() > 1e-2 * np.abs(value).mean(), name
    assert_features_close(ours, reference)
    # Any batch size: one image alone gives its row of the batch.
    single = inception_features(params, images[2:3])
    for name in reference:
        np.testing.assert_allclose(single[name][0], ours[name][2], rtol=1e-5, atol=1e-5)


def test_features_of_other_sizes_use_the_legacy_resize(params, torch_model):
    images = structured_images(2, 37, 53, seed=2)
    resized = legacy_resize_reference(images, 299, 299)
    reference = torch_features(torch_model, (resized - 128) / 128)
    assert_features_close(inception_features(params, images), reference)


@pytest.mark.parametrize("shape", [(2, 37, 53, 3), (1, 331, 410, 3)])
def test_resize_is_tf1_resize_bilinear(shape):
    import tensorflow as tf

    images = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    ours = np.asarray(resize_bilinear_tf1(images.astype(np.float32), (299, 299)))
    assert ours.shape == (shape[0], 299, 299, 3)
    np.testing.assert_allclose(ours, legacy_resize_reference(images, 299, 299), atol=1e-3)
    tf_resized = tf.raw_ops.ResizeBilinear(
        images=tf.constant(images.astype(np.float32)),
        size=[299, 299],
        align_corners=False,
        half_pixel_centers=False,
    ).numpy()
    np.testing.assert_allclose(ours, tf_resized, atol=1e-4)
    # Not the half-pixel rule of pytorch-fid and jax.image.resize.
    half_pixel = np.asarray(jax.image.resize(images.astype(np.float32), ours.shape, "bilinear"))
    assert np.abs(ours - half_pixel).max() > 1


def test_preprocess_scale_and_no_resize_at_299():
    images = np.random.default_rng(4).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 128, 255)
    x = np.asarray(preprocess(images))
    assert x.dtype == np.float32 and x.shape == images.shape
    np.testing.assert_array_equal(x[0, 0, 0], [-1.0, 0.0, 0.9921875])
    np.testing.assert_array_equal(x, (images.astype(np.float32) - 128) / 128)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((1, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((1, 64, 64, 3), np.int32), "uint8"),
        (np.zeros((64, 64, 3), np.uint8), r"\(64, 64, 3\)"),
        (np.zeros((1, 64, 64, 4), np.uint8), r"\(1, 64, 64, 4\)"),
        (np.zeros((0, 64, 64, 3), np.uint8), r"\(0, 64, 64, 3\)"),
        ([[[[0, 0, 0]]]], "list"),
    ],
)
def test_bad_images_are_refused(params, images, match):
    with pytest.raises(ValueError, match=match):
        inception_features(params, images)


def test_random_params_have_the_converted_tree(params, images_299):
    random = init_inception_params(jax.random.key(0))
    flat_random, flat_converted = flatten_dict(random), flatten_dict(params)
    assert set(flat_random) == set(flat_converted)
    for path, value in flat_converted.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, path
        assert flat_random[path].shape == value.shape, path
    # 94 conv + BN layers, and the fc layer.
    assert len(flat_converted) == 94 * 5 + 2
    # Usable as they are: O(1) features that tell images apart.
    for name, value in inception_features(random, images_299).items():
        value = np.asarray(value)
        assert np.isfinite(value).all() and 0.1 < np.abs(value).mean() < 10, name
        assert np.abs(value[0] - value[1]).mean() > 1e-2 * np.abs(value).mean(), name


def _our_path(key: str) -> tuple[tuple[str, ...], str]:
    *modules, leaf = key.split(".")
    if modules == ["fc"]:
        return ("params", "fc", {"weight": "kernel", "bias": "bias"}[leaf]), leaf
    if modules[-1] == "conv":
        return ("params", *modules, "kernel"), "conv"
    collection, name = {
        "weight": ("params", "scale"),
        "bias": ("params", "bias"),
        "running_mean": ("batch_stats", "mean"),
        "running_var": ("batch_stats", "var"),
    }[leaf]
    return (collection, *modules, name), "copy"


def test_checkpoint_round_trip(tmp_path):
    path = write_random_pytorch_fid_checkpoint(tmp_path / "pt_inception.pth", seed=1)
    state = random_pytorch_fid_state_dict(seed=1)
    flat = flatten_dict(load_pytorch_fid_inception(path))
    weights = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(flat) == len(weights)
    for key, value in weights.items():
        our_path, kind = _our_path(key)
        if kind == "conv":
            value = value.transpose(2, 3, 1, 0)
        elif key == "fc.weight":
            value = value.T
        np.testing.assert_array_equal(flat[our_path], value, err_msg=key)


def test_converter_lists_every_problem_at_once(state_dict):
    state = {k: v.numpy() for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    pytorch_fid_inception_params(state)  # without num_batches_tracked it converts
    del state["Mixed_6d.branch1x1.conv.weight"]
    state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    state["Mixed_7c.branch_pool.conv.weight"] = np.zeros((192, 2048, 3, 3), np.float32)
    with pytest.raises(ValueError) as error:
        pytorch_fid_inception_params(state)
    message = str(error.value)
    assert "unknown keys: AuxLogits.fc.weight" in message
    assert "missing keys: Mixed_6d.branch1x1.conv.weight" in message
    assert "fc.bias: (1000,) (expected (1008,))" in message
    assert "Mixed_7c.branch_pool.conv.weight: (192, 2048, 3, 3) (expected (192, 2048, 1, 1))" in (
        message
    )


def test_loader_refuses_a_file_that_is_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict"):
        load_pytorch_fid_inception(tmp_path / "list.pth")
