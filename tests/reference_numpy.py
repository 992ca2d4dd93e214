"""A float64 numpy oracle of the reference DiT and of the ADM Gaussian diffusion.

Written from the formulas of facebookresearch/DiT (models.py) and of OpenAI's
improved-diffusion / guided-diffusion (gaussian_diffusion.py, respace.py, losses.py) that the
reference vendors. Nothing here imports ditjax: the tests compare ditjax against this module.

Parameter layout (the one a checkpoint converter targets), as nested dicts of arrays:
  x_embedder/proj/{kernel (p, p, C, D), bias (D,)}
  t_embedder/mlp_0/{kernel (256, D), bias}, t_embedder/mlp_2/{kernel (D, D), bias}
  y_embedder/embedding_table (num_classes + 1, D)
  blocks/blocks_i/adaLN_modulation/linear/{kernel (D, 6D), bias}
  blocks/blocks_i/attn/qkv/{kernel (D, 3D), bias}, blocks/blocks_i/attn/proj/{kernel, bias}
  blocks/blocks_i/mlp/fc1/{kernel (D, 4D), bias}, blocks/blocks_i/mlp/fc2/{kernel, bias}
  final_layer/adaLN_modulation/linear/{kernel (D, 2D), bias}
  final_layer/linear/{kernel (D, p * p * out_channels), bias}
Dense kernels are (in, out), i.e. the transpose of PyTorch's Linear weight.
"""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- embeddings


def sincos_position_table(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Reference 2-D table (grid_h * grid_w, D), token = r * grid_w + c.

    Channels [0, D/4): sin(c * omega), [D/4, D/2): cos(c * omega), [D/2, 3D/4): sin(r * omega),
    [3D/4, D): cos(r * omega), with omega_i = 1 / 10000 ** (i / (D / 4)).
    """
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    table = np.zeros((grid_h * grid_w, embed_dim), dtype=np.float64)
    for r in range(grid_h):
        for c in range(grid_w):
            token = r * grid_w + c
            table[token, 0:quarter] = np.sin(c * omega)
            table[token, quarter : 2 * quarter] = np.cos(c * omega)
            table[token, 2 * quarter : 3 * quarter] = np.sin(r * omega)
            table[token, 3 * quarter :] = np.cos(r * omega)
    return table


def timestep_features(t: np.ndarray, dim: int = 256, max_period: float = 10000.0) -> np.ndarray:
    """[cos(t f), sin(t f)] with f_i = exp(-ln(max_period) * i / (dim / 2)), i < dim / 2."""
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half)
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None]
    return np.concatenate([np.cos(args), np.sin(args)], axis=-1)


# --------------------------------------------------------------------------- layers


def linear(x: np.ndarray, p: dict) -> np.ndarray:
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def modulate(x: np.ndarray, shift: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :]


def attention(x: np.ndarray, p: dict, num_heads: int) -> np.ndarray:
    """timm Attention: fused qkv as (N, T, 3, heads, head_dim); softmax(q k^T / sqrt(hd)) v."""
    n, t, d = x.shape
    head_dim = d // num_heads
    qkv = linear(x, p["qkv"]).reshape(n, t, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, T, hd)
    weights = softmax(q @ k.swapaxes(-1, -2) * head_dim**-0.5)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    return linear(out, p["proj"])


def mlp(x: np.ndarray, p: dict) -> np.ndarray:
    return linear(gelu_tanh(linear(x, p["fc1"])), p["fc2"])


def dit_block(x: np.ndarray, c: np.ndarray, p: dict, num_heads: int) -> np.ndarray:
    """adaLN-Zero block; chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp."""
    mod = linear(silu(c), p["adaLN_modulation"]["linear"])
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = np.split(mod, 6, axis=-1)
    x = x + gate_msa[:, None] * attention(
        modulate(layer_norm(x), shift_msa, scale_msa), p["attn"], num_heads
    )
    x = x + gate_mlp[:, None] * mlp(modulate(layer_norm(x), shift_mlp, scale_mlp), p["mlp"])
    return x


def final_layer(x: np.ndarray, c: np.ndarray, p: dict) -> np.ndarray:
    shift, scale = np.split(linear(silu(c), p["adaLN_modulation"]["linear"]), 2, axis=-1)
    return linear(modulate(layer_norm(x), shift, scale), p["linear"])


def patch_embed(x: np.ndarray, p: dict, patch: int) -> np.ndarray:
    """A p x p stride-p conv as reshape + matmul: (N, H, W, C) -> (N, h * w, D), row-major."""
    n, height, width, channels = x.shape
    h, w = height // patch, width // patch
    patches = x.reshape(n, h, patch, w, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, h * w, patch * patch * channels)
    kernel = np.asarray(p["kernel"], np.float64)  # (p, p, C, D)
    return patches @ kernel.reshape(-1, kernel.shape[-1]) + np.asarray(p["bias"], np.float64)


def unpatchify(x: np.ndarray, h: int, w: int, patch: int) -> np.ndarray:
    """(N, h * w, p * p * C), channel fastest -> (N, h * p, w * p, C)."""
    n = x.shape[0]
    c = x.shape[-1] // (patch * patch)
    x = x.reshape(n, h, w, patch, patch, c)
    x = np.einsum("nhwpqc->nhpwqc", x)
    return x.reshape(n, h * patch, w * patch, c)


def embed(params: dict, x: np.ndarray, t: np.ndarray, y: np.ndarray, patch_size: int):
    """Tokens with positions (N, h * w, D), t embedding (N, D), y embedding (N, D), h, w."""
    x = np.asarray(x, np.float64)
    _, height, width, _ = x.shape
    h, w = height // patch_size, width // patch_size
    tokens = patch_embed(x, params["x_embedder"]["proj"], patch_size)
    tokens = tokens + sincos_position_table(tokens.shape[-1], h, w)[None]
    t_mlp = params["t_embedder"]
    t_emb = linear(silu(linear(timestep_features(t), t_mlp["mlp_0"])), t_mlp["mlp_2"])
    table = np.asarray(params["y_embedder"]["embedding_table"], np.float64)
    return tokens, t_emb, table[np.asarray(y)], h, w


def dit_forward(
    params: dict,
    block_params: list[dict],
    x: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    *,
    patch_size: int,
    num_heads: int,
) -> np.ndarray:
    """The reference DiT forward (adaLN-Zero blocks) in float64; x is NHWC."""
    tokens, t_emb, y_emb, h, w = embed(params, x, t, y, patch_size)
    c = t_emb + y_emb
    for p in block_params:
        tokens = dit_block(tokens, c, p, num_heads)
    out = final_layer(tokens, c, params["final_layer"])
    return unpatchify(out, h, w, patch_size)


def affine_layer_norm(x: np.ndarray, p: dict) -> np.ndarray:
    return layer_norm(x) * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def in_context_forward(
    params: dict,
    block_params: list[dict],
    x: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    *,
    patch_size: int,
    num_heads: int,
) -> np.ndarray:
    """The paper's in-context variant: [image tokens, t, y] through pre-norm ViT blocks
    (affine LayerNorms norm1, norm2), the two conditioning tokens dropped after the last
    block, then LayerNorm (affine, norm_final) and the linear decoder."""
    tokens, t_emb, y_emb, h, w = embed(params, x, t, y, patch_size)
    num_image_tokens = tokens.shape[1]
    tokens = np.concatenate([tokens, t_emb[:, None], y_emb[:, None]], axis=1)
    for p in block_params:
        tokens = tokens + attention(affine_layer_norm(tokens, p["norm1"]), p["attn"], num_heads)
        tokens = tokens + mlp(affine_layer_norm(tokens, p["norm2"]), p["mlp"])
    tokens = tokens[:, :num_image_tokens]
    final = params["final_layer"]
    out = linear(affine_layer_norm(tokens, final["norm_final"]), final["linear"])
    return unpatchify(out, h, w, patch_size)


def unscanned_block_params(params: dict, depth: int) -> list[dict]:
    return [params["blocks"][f"blocks_{i}"] for i in range(depth)]


def scanned_block_params(params: dict, depth: int) -> list[dict]:
    """Block i of params stacked on a leading layer axis under blocks/blocks."""

    def take(tree, i):
        if isinstance(tree, dict):
            return {k: take(v, i) for k, v in tree.items()}
        return np.asarray(tree)[i]

    return [take(params["blocks"]["blocks"], i) for i in range(depth)]


# --------------------------------------------------------------------------- diffusion


def linear_betas(num_timesteps: int) -> np.ndarray:
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def schedule(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-step constant of GaussianDiffusion.__init__, float64."""
    betas = np.asarray(betas, np.float64)
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    pv = betas * (1.0 - ac_prev) / (1.0 - ac)
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
        "posterior_variance": pv,
        "posterior_log_variance_clipped": np.log(np.append(pv[1], pv[1:])),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "log_betas": np.log(betas),
        "fixed_large_log_variance": np.log(np.append(pv[1], betas[1:])),
    }


def space_timesteps(num_timesteps: int, section_counts) -> set[int]:
    """respace.space_timesteps, re-implemented: the set of kept original steps."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[4:])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(section_counts)
        section_counts = [int(s) for s in section_counts.split(",")]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(section_counts)
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


def respaced_betas(base_betas: np.ndarray, kept) -> tuple[np.ndarray, list[int]]:
    """SpacedDiffusion.__init__: new betas from the kept cumulative alphas, and the map."""
    ac = np.cumprod(1.0 - np.asarray(base_betas, np.float64))
    last = 1.0
    betas, timestep_map = [], []
    for i, a in enumerate(ac):
        if i in kept:
            betas.append(1.0 - a / last)
            last = a
            timestep_map.append(i)
    return np.array(betas), timestep_map


def _at(values: np.ndarray, t: np.ndarray, ndim: int) -> np.ndarray:
    return values[np.asarray(t)].reshape((-1,) + (1,) * (ndim - 1))


def q_sample(s: dict, x_start, t, noise) -> np.ndarray:
    x_start = np.asarray(x_start, np.float64)
    nd = x_start.ndim
    return _at(s["sqrt_alphas_cumprod"], t, nd) * x_start + _at(
        s["sqrt_one_minus_alphas_cumprod"], t, nd
    ) * np.asarray(noise, np.float64)


def q_posterior(s: dict, x_start, x_t, t):
    x_start = np.asarray(x_start, np.float64)
    x_t = np.asarray(x_t, np.float64)
    nd = x_t.ndim
    mean = (
        _at(s["posterior_mean_coef1"], t, nd) * x_start
        + _at(s["posterior_mean_coef2"], t, nd) * x_t
    )
    var = _at(s["posterior_variance"], t, nd) * np.ones_like(x_t)
    log_var = _at(s["posterior_log_variance_clipped"], t, nd) * np.ones_like(x_t)
    return mean, var, log_var


def p_mean_variance(s: dict, model_output, x_t, t, learn_sigma: bool = True) -> dict:
    """Model posterior for an eps-predicting model (learned range or fixed large variance)."""
    model_output = np.asarray(model_output, np.float64)
    x_t = np.asarray(x_t, np.float64)
    nd = x_t.ndim
    channels = x_t.shape[-1]
    if learn_sigma:
        eps, v = model_output[..., :channels], model_output[..., channels:]
        frac = (v + 1.0) / 2.0
        log_var = frac * _at(s["log_betas"], t, nd) + (1.0 - frac) * _at(
            s["posterior_log_variance_clipped"], t, nd
        )
    else:
        eps = model_output
        log_var = _at(s["fixed_large_log_variance"], t, nd) * np.ones_like(x_t)
    pred_xstart = (
        _at(s["sqrt_recip_alphas_cumprod"], t, nd) * x_t
        - _at(s["sqrt_recipm1_alphas_cumprod"], t, nd) * eps
    )
    mean = (
        _at(s["posterior_mean_coef1"], t, nd) * pred_xstart
        + _at(s["posterior_mean_coef2"], t, nd) * x_t
    )
    return {
        "mean": mean,
        "variance": np.exp(log_var),
        "log_variance": log_var,
        "pred_xstart": pred_xstart,
    }


def normal_kl(mean1, logvar1, mean2, logvar2) -> np.ndarray:
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + np.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * np.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x, means, log_scales) -> np.ndarray:
    x = np.asarray(x, np.float64)
    centered = x - means
    inv_stdv = np.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    log_cdf_delta = np.log(np.maximum(cdf_plus - cdf_min, 1e-12))
    return np.where(
        x < -0.999, log_cdf_plus, np.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
    )


def mean_flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1).mean(axis=1)


def vb_terms(s: dict, model_output, x_start, x_t, t) -> dict[str, np.ndarray]:
    """Both candidates of _vb_terms_bpd (bits) and the selected output."""
    t = np.asarray(t)
    true_mean, _, true_log_var = q_posterior(s, x_start, x_t, t)
    out = p_mean_variance(s, model_output, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"]))
    kl = kl / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(
        x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
    )
    nll = mean_flat(nll) / math.log(2.0)
    return {"kl": kl, "nll": nll, "vb": np.where(t == 0, nll, kl)}


def training_losses(s: dict, model_fn, x_start, t, noise, timestep_map) -> dict[str, np.ndarray]:
    """LossType.MSE with learned range variance: mse(eps) + vb (KL or decoder NLL, in bits)."""
    x_start = np.asarray(x_start, np.float64)
    noise = np.asarray(noise, np.float64)
    t = np.asarray(t)
    x_t = q_sample(s, x_start, t, noise)
    out = np.asarray(model_fn(x_t, np.asarray(timestep_map)[t]), np.float64)
    channels = x_start.shape[-1]
    mse = mean_flat((noise - out[..., :channels]) ** 2)
    terms = vb_terms(s, out, x_start, x_t, t)
    return {"loss": mse + terms["vb"], "mse": mse, **terms, "x_t": x_t}


def ddim_loop(s: dict, model_fn, noise, timestep_map, eta: float = 0.0, zs=None) -> np.ndarray:
    """ddim_sample_loop, float64; zs[i] is the noise of step i (needed when eta > 0)."""
    x = np.asarray(noise, np.float64)
    nd = x.ndim
    for i in range(len(s["betas"]) - 1, -1, -1):
        t = np.full((x.shape[0],), i)
        out = p_mean_variance(s, model_fn(x, np.asarray(timestep_map)[t]), x, t)
        eps = (_at(s["sqrt_recip_alphas_cumprod"], t, nd) * x - out["pred_xstart"]) / _at(
            s["sqrt_recipm1_alphas_cumprod"], t, nd
        )
        ab = _at(s["alphas_cumprod"], t, nd)
        ab_prev = _at(s["alphas_cumprod_prev"], t, nd)
        sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)
        x = out["pred_xstart"] * np.sqrt(ab_prev) + np.sqrt(1 - ab_prev - sigma**2) * eps
        if eta and i > 0:
            x = x + sigma * np.asarray(zs[i], np.float64)
    return x


def ddpm_loop(s: dict, model_fn, noise, timestep_map, zs) -> np.ndarray:
    """p_sample_loop, float64; zs[i] is the noise drawn at step i (unused at i = 0)."""
    x = np.asarray(noise, np.float64)
    for i in range(len(s["betas"]) - 1, -1, -1):
        t = np.full((x.shape[0],), i)
        out = p_mean_variance(s, model_fn(x, np.asarray(timestep_map)[t]), x, t)
        x = out["mean"]
        if i > 0:
            x = x + np.exp(0.5 * out["log_variance"]) * np.asarray(zs[i], np.float64)
    return x
