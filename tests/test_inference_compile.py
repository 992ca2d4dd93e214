"""Forward-only programs on CPU compile without YNNPACK, unless XLA_FLAGS sets that option."""

import jax
import jax.numpy as jnp
import numpy as np

from ditjax.autoencoder.identity import IdentityAutoencoder
from ditjax.benchmark import BenchSpec, compile_guided_forward
from ditjax.inference_compile import YNNPACK_FUSION_OPTION, inference_compiler_options
from ditjax.models import create_model
from ditjax.sampling import make_image_sample_fn
from model_fixtures import init_params, randomize

TINY = {
    "depth": 1,
    "hidden_size": 32,
    "num_heads": 2,
    "input_size": 8,
    "num_classes": 4,
    "in_channels": 3,
}
YNNPACK_KERNEL = "__ynn_fusion"


def _matmul_text(**jit_options) -> str:
    a = jnp.ones((256, 256), jnp.float32)
    return jax.jit(jnp.matmul, **jit_options).lower(a, a).compile().as_text()


def test_on_cpu_the_options_move_products_off_ynnpack():
    options = inference_compiler_options()
    assert options == {YNNPACK_FUSION_OPTION: ""}
    assert YNNPACK_KERNEL in _matmul_text()
    assert YNNPACK_KERNEL not in _matmul_text(compiler_options=options)


def test_a_user_setting_in_xla_flags_is_left_to_hold(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--{YNNPACK_FUSION_OPTION}=LIBRARY_FUSION_TYPE_DOT")
    assert inference_compiler_options() == {}


def test_the_sampling_program_compiles_without_ynnpack_and_matches_the_default():
    model = create_model("DiT-S/4", **TINY)
    x = jnp.zeros((1, 8, 8, 3))
    # adaLN-Zero starts as the identity; random weights make every product count.
    params = randomize(init_params(model, x, jnp.zeros((1,)), jnp.zeros((1,), int)), scale=0.05)
    sample = make_image_sample_fn(
        model, IdentityAutoencoder(), latent_shape=(8, 8, 3), sampler="ddim", steps=3
    )
    labels, key = jnp.arange(2, dtype=jnp.int32), jax.random.key(2)
    compiled = sample.lower(params, labels, key).compile()
    assert YNNPACK_KERNEL not in compiled.as_text()
    default = jax.jit(sample.__wrapped__).lower(params, labels, key).compile()
    assert YNNPACK_KERNEL in default.as_text()
    images, reference = compiled(params, labels, key), default(params, labels, key)
    assert images.dtype == np.uint8 and images.shape == (2, 8, 8, 3)
    # The same computation on other kernels: uint8 pixels at most one rounding step apart.
    difference = np.abs(np.asarray(images, int) - np.asarray(reference, int))
    assert difference.max() <= 1


def test_the_benchmark_forward_is_compiled_like_the_sampler():
    _, program, call = compile_guided_forward(
        BenchSpec(
            model="DiT-S/4",
            latent_size=8,
            batch_size=2,
            model_overrides=(("depth", 1), ("hidden_size", 32), ("num_heads", 2)),
        )
    )
    assert YNNPACK_KERNEL not in program.compiled.as_text()
    assert np.all(np.isfinite(np.asarray(call())))
