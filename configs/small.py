"""Recipe for a small labelled image folder in pixel space, on a CPU or one GPU.

For folders of up to about 50K images of up to about 64 px: extract them at 16 px with the
identity autoencoder (`extract_latents --autoencoder=identity --image_size=16`); image size,
latent shape and classes then come from the dataset. A 4-block, 128-wide DiT-S/4 (4 x 4
patches: 16 tokens at 16 px), batch 32, Min-SNR loss weighting (gamma 5), 12000 steps or 12
minutes of training, whichever comes first. Min-SNR is what makes short runs work: on mnist5k
(class match at guidance 4) 96% at step 6000 and 100% at 12000 with it, 55% and 96% without
(it moves the weight from the nearly clean timesteps, which the loss is full of, to the noisy
ones that decide where the strokes go). At equal wall time batch 32 beat 64 and 16; learning
rate 2e-3 beat 1e-3 and 3e-3; EMA beat the raw weights; learned sigma beat a fixed variance;
on the demo set a cosine decay of the learning rate did not help. Patch 2 (64 tokens) costs
3.7x more per step. Scaling up (a GPU, or more time): `--config.model=DiT-S/2` at 16 px, then
wider models (`model_overrides.hidden_size=384`, `depth=12`: the full DiT-S/2), and raise
`total_steps`; keep the learning rate below about 1e-3 for the full-size models.
"""

import pathlib
import runpy

_BASE = runpy.run_path(str(pathlib.Path(__file__).with_name("base.py")))


def get_config():
    config = _BASE["get_config"]()
    config.model = "DiT-S/4"
    config.model_overrides.hidden_size = 128
    config.model_overrides.depth = 4
    config.model_overrides.num_heads = 4
    config.dtype = "float32"
    config.autoencoder = "identity"
    # Off: a mirrored digit or letter is another class (or none); turn on for photos.
    config.random_flip = False
    config.global_batch_size = 32
    config.learning_rate = 2e-3
    config.warmup_steps = 100
    config.min_snr_gamma = 5.0
    # Normal steps have gradient norms of 0.02-0.4, so this clip only acts on a rare blow-up of
    # the variance (vb) term, which unclipped filled Adam's state with a ~1e9 gradient: a
    # mnist5k run (Min-SNR gamma 3) spiked at step 2400 and was at 9% class match at step 6000.
    config.grad_clip_norm = 1.0
    # Short runs move fast: an EMA over the last ~100 steps (0.998 trailed the weights).
    config.ema_decay = 0.99
    config.total_steps = 12000
    # A slower machine stops here with fewer steps (the checkpoint records how many).
    config.time_limit_minutes = 12.0
    config.log_every = 100
    config.checkpoint_every = 2000
    config.keep_checkpoints = 2
    config.keep_every = 0
    config.sample_every = 4000
    config.preview_sampler = "ddim25"
    config.preview_cfg_scale = 4.0
    return config
