"""The Stable Diffusion VAE: diffusers parity, weight conversion, loading and error reporting."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from ditjax.autoencoder.sd_vae import SDVAEAutoencoder, load_sd_vae
from ditjax.autoencoder.sd_vae_layers import SDVAE, SDVAEConfig
from ditjax.convert.diffusers_vae import (
    diffusers_vae_params,
    flax_path_to_diffusers_key,
    infer_sd_vae_config,
    sd_vae_param_shapes,
)

SD_VAE_FT_MSE_PARAMS = 83_653_863  # sum of numel over diffusers AutoencoderKL(**FULL_SIZE)
FULL_SIZE = {
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
}
SMALL = {
    "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2,
    "up_block_types": ("UpDecoderBlock2D",) * 2,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 32,
}
SMALL_CONFIG = SDVAEConfig(
    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, sample_size=32
)
PARITY_ATOL = 5e-5  # outputs are O(1); float32 rounding differences measure ~3e-6


def torch_shape(flax_shape):
    if len(flax_shape) == 4:
        return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
    return tuple(flax_shape[::-1])


def synthetic_state_dict(config, seed=0):
    """Random float32 weights under every diffusers key of `config`, in diffusers shapes."""
    rng = np.random.default_rng(seed)
    state_dict = {}
    for path, shape in sd_vae_param_shapes(config).items():
        value = rng.standard_normal(torch_shape(shape), np.float32)
        if len(shape) > 1:
            value *= np.prod(shape[:-1]) ** -0.5
        else:
            value = 0.3 * value + (path[-1] == "scale")
        state_dict[flax_path_to_diffusers_key(path)] = value
    return state_dict


def nchw(x):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def nhwc(x):
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_full_size_default_config_shapes_without_allocation():
    shapes = sd_vae_param_shapes(SDVAEConfig())
    assert sum(int(np.prod(s)) for s in shapes.values()) == SD_VAE_FT_MSE_PARAMS
    assert len({flax_path_to_diffusers_key(p) for p in shapes}) == len(shapes) == 248

    images = jax.ShapeDtypeStruct((2, 256, 192, 3), jnp.float32)
    variables = jax.eval_shape(SDVAE(SDVAEConfig()).init, jax.random.key(0), images)
    model = SDVAE(SDVAEConfig())
    moments = jax.eval_shape(lambda v, x: model.apply(v, x, method="encode"), variables, images)
    assert moments.shape == (2, 32, 24, 8)
    latents = jax.ShapeDtypeStruct((2, 32, 24, 4), jnp.float32)
    decoded = jax.eval_shape(lambda v, z: model.apply(v, z, method="decode"), variables, latents)
    assert decoded.shape == (2, 256, 192, 3)


def test_config_is_inferred_from_shapes():
    config = SDVAEConfig(
        in_channels=1,
        out_channels=2,
        latent_channels=3,
        block_out_channels=(16, 32, 48),
        layers_per_block=3,
        norm_num_groups=16,
    )
    state_dict = synthetic_state_dict(config)
    assert infer_sd_vae_config(state_dict, norm_num_groups=16) == config
    assert diffusers_vae_params(state_dict)["decoder"]["conv_out"]["kernel"].shape == (3, 3, 16, 2)
    without_attention = SDVAEConfig(
        block_out_channels=(32,), use_quant_conv=False, mid_block_add_attention=False
    )
    assert infer_sd_vae_config(synthetic_state_dict(without_attention)) == without_attention


def test_conversion_reports_every_unknown_missing_and_misshaped_key():
    state_dict = synthetic_state_dict(SMALL_CONFIG)
    del state_dict["decoder.up_blocks.1.resnets.0.norm2.bias"]
    state_dict["encoder.mid_block.attentions.0.rotary.weight"] = np.zeros(3, np.float32)
    state_dict["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError) as error:
        diffusers_vae_params(state_dict)
    message = str(error.value)
    assert "missing keys (1): decoder.up_blocks.1.resnets.0.norm2.bias" in message
    assert "unknown keys (1): encoder.mid_block.attentions.0.rotary.weight" in message
    assert "quant_conv.weight: (8, 8, 3, 3), expected (8, 8, 1, 1)" in message


def test_unsupported_diffusers_configs_are_refused():
    with pytest.raises(ValueError, match="shift_factor"):
        SDVAEConfig.from_diffusers({"shift_factor": 0.1159, "latent_channels": 16})
    with pytest.raises(ValueError, match="AttnDownEncoderBlock2D"):
        SDVAEConfig.from_diffusers({"down_block_types": ["AttnDownEncoderBlock2D"]})
    with pytest.raises(ValueError, match="AsymmetricAutoencoderKL"):
        SDVAEConfig.from_diffusers({"_class_name": "AsymmetricAutoencoderKL"})


def test_legacy_attention_names_and_conv_shaped_weights_convert_identically():
    state_dict = synthetic_state_dict(SMALL_CONFIG)
    legacy = {}
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    for key, value in state_dict.items():
        for new, old in renames.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
                value = value[:, :, None, None] if value.ndim == 2 else value
        legacy[key] = value
    assert "decoder.mid_block.attentions.0.proj_attn.weight" in legacy
    assert_trees_equal(diffusers_vae_params(legacy), diffusers_vae_params(state_dict))


def test_load_sd_vae_reads_safetensors_and_config(tmp_path):
    state_dict = synthetic_state_dict(SMALL_CONFIG)
    save_file(state_dict, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    config_json = {"_class_name": "AutoencoderKL", **SMALL, "scaling_factor": 0.5}
    (tmp_path / "config.json").write_text(json.dumps(config_json))

    vae = load_sd_vae(tmp_path)
    assert vae.config == dataclasses.replace(SMALL_CONFIG, scaling_factor=0.5)
    assert (vae.latent_channels, vae.downsample, vae.scale) == (4, 2, 0.5)
    assert_trees_equal(vae.params, diffusers_vae_params(state_dict))
    from_file = load_sd_vae(tmp_path / "diffusion_pytorch_model.safetensors")
    assert_trees_equal(from_file.params, vae.params)

    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 8, 6, 3)), jnp.float32)
    moments = vae.encode(images)
    assert moments.shape == (1, 4, 3, 8) and moments.dtype == jnp.float32
    latents = moments[..., :4]
    decoded = jax.jit(lambda z: vae.decode(z / vae.scale))(latents * vae.scale)
    assert decoded.shape == (1, 8, 6, 3) and decoded.dtype == jnp.float32
    np.testing.assert_allclose(decoded, vae.decode(latents), atol=1e-5)

    bf16 = load_sd_vae(tmp_path, dtype=jnp.bfloat16)
    tolerance = 0.05 * float(jnp.abs(decoded).max())
    np.testing.assert_allclose(bf16.encode(images), moments, atol=tolerance)
    np.testing.assert_allclose(bf16.decode(latents), decoded, atol=tolerance)


# Parity with diffusers (PyTorch).


@pytest.fixture(scope="module")
def diffusers_vae():
    """A small diffusers AutoencoderKL with every parameter randomised (seeded)."""
    import diffusers
    import torch

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**SMALL).eval()
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if param.ndim > 1:  # conv / linear: unit-variance activations
                param.copy_(torch.randn_like(param) * param[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.3 * torch.randn_like(param))
            else:
                param.copy_(0.3 * torch.randn_like(param))
    return vae


def assert_matches_diffusers(autoencoder, diffusers_vae):
    import torch

    generator = np.random.default_rng(0)
    images = generator.uniform(-1, 1, (2, 24, 40, 3)).astype(np.float32)
    latents = generator.standard_normal((2, 3, 5, 4)).astype(np.float32)
    with torch.no_grad():
        posterior = diffusers_vae.encode(torch.from_numpy(nchw(images))).latent_dist
        decoded = diffusers_vae.decode(torch.from_numpy(nchw(latents))).sample
    with jax.default_matmul_precision("highest"):
        moments = np.asarray(autoencoder.encode(jnp.asarray(images)))
        ours = np.asarray(autoencoder.decode(jnp.asarray(latents)))

    mean, logvar = np.split(moments, 2, axis=-1)
    np.testing.assert_allclose(mean, nhwc(posterior.mean.numpy()), atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(logvar, nhwc(posterior.logvar.numpy()), atol=PARITY_ATOL, rtol=0)
    np.testing.assert_allclose(ours, nhwc(decoded.numpy()), atol=PARITY_ATOL, rtol=0)
    assert np.std(mean) > 0.1 and np.std(logvar) > 0.1 and np.std(ours) > 0.1


def test_encode_and_decode_match_diffusers(diffusers_vae):
    state_dict = {k: v.numpy() for k, v in diffusers_vae.state_dict().items()}
    config = infer_sd_vae_config(state_dict, norm_num_groups=8, sample_size=32)
    assert config == SMALL_CONFIG
    autoencoder = SDVAEAutoencoder(diffusers_vae_params(state_dict), config)
    assert_matches_diffusers(autoencoder, diffusers_vae)


@pytest.mark.parametrize("safe_serialization", [True, False])
def test_load_sd_vae_of_a_saved_diffusers_vae_matches(diffusers_vae, tmp_path, safe_serialization):
    diffusers_vae.save_pretrained(tmp_path, safe_serialization=safe_serialization)
    autoencoder = load_sd_vae(tmp_path)
    assert autoencoder.config == SMALL_CONFIG
    assert_matches_diffusers(autoencoder, diffusers_vae)


def test_full_size_config_matches_diffusers_parameters():
    import diffusers
    import torch

    with torch.device("meta"):
        reference = diffusers.AutoencoderKL(**FULL_SIZE)
    reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert sum(p.numel() for p in reference.parameters()) == SD_VAE_FT_MSE_PARAMS
    ours = {
        flax_path_to_diffusers_key(path): torch_shape(shape)
        for path, shape in sd_vae_param_shapes(SDVAEConfig()).items()
    }
    assert ours == reference_shapes
