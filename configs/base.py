"""Every training knob with its default; variant configs override a few fields."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # Model.
    c.model = "DiT-XL/2"  # one of DiT-{S,B,L,XL}/{2,4,8}
    c.block_type = "adaln_zero"  # adaln_zero | adaln | cross_attention | in_context
    c.model_overrides = ml_collections.ConfigDict()  # extra DiT fields, e.g. depth, hidden_size
    c.num_classes = 0  # class labels (0: the dataset's); label num_classes is the null class
    c.class_dropout_prob = 0.1  # label dropout for classifier-free guidance
    c.learn_sigma = True  # predict the variance as well as the noise
    c.dtype = "bfloat16"  # activation dtype; params and optimizer state stay float32
    c.attention_impl = ""  # "" (let JAX choose) | xla | cudnn
    c.scan_blocks = False  # run the blocks as one nn.scan (faster compiles for deep models)
    c.remat = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable

    # Data.
    c.dataset_dir = ""  # latent dataset written by `python -m ditjax.extract_latents`
    # 0 takes these from the dataset's ditjax_latents.json; a set value must agree with it.
    c.image_size = 0  # pixel side of the images the latents were made from
    c.latent_size = 0  # latent side (image_size / autoencoder downsampling)
    c.latent_channels = 0  # latent channels (4 for the SD VAE, 3 for identity)
    c.autoencoder = "identity"  # decoder for previews: identity | sd-vae:PATH
    c.data_workers = 0  # grain worker processes per host (0 reads in the main process)
    c.random_flip = True  # horizontal flip augmentation (off for digits, text, ...)

    # Diffusion.
    c.diffusion_steps = 1000  # training timesteps of the linear schedule
    # Min-SNR loss weighting: the mse of step t weighted by min(SNR_t, gamma) / SNR_t
    # (0: the paper's uniform weight; Hang et al. 2023 use 5).
    c.min_snr_gamma = 0.0

    # Optimisation.
    c.global_batch_size = 256  # examples per step summed over all hosts and devices
    c.learning_rate = 1e-4  # AdamW peak learning rate
    c.warmup_steps = 0  # linear warmup from 0 to learning_rate (0 disables)
    c.lr_decay = "none"  # after warmup: none (constant) | cosine (down to the final fraction)
    c.lr_final_fraction = 0.0  # cosine: learning rate at total_steps / learning_rate
    c.weight_decay = 0.0  # AdamW decoupled weight decay
    c.adam_b1 = 0.9  # AdamW beta1
    c.adam_b2 = 0.999  # AdamW beta2
    c.adam_eps = 1e-8  # AdamW epsilon
    c.grad_clip_norm = 0.0  # clip gradients to this global norm (0 disables)
    c.ema_decay = 0.9999  # decay of the exponential moving average of the params
    c.total_steps = 400_000  # training steps
    # Wall-clock budget of one invocation: save and stop once it is spent (0: no limit).
    c.time_limit_minutes = 0.0

    # Periodic actions.
    c.log_every = 100  # steps between metric reports
    c.checkpoint_every = 5_000  # steps between checkpoints
    c.keep_checkpoints = 3  # most recent checkpoints kept
    c.keep_every = 100_000  # also keep every checkpoint at a multiple of this step (0: none)
    c.sample_every = 10_000  # steps between preview grids (0 disables)
    c.preview_labels = ()  # classes of the preview grid (empty: the first 8 classes)
    c.preview_sampler = "ddim50"  # respacing of the preview sampler (DDIM when it starts ddim)
    c.preview_cfg_scale = 4.0  # guidance scale of the preview samples
    c.profile_steps = 0  # steps to trace with the profiler after the first log (0: off)

    # FID during training (off by default): EMA samples scored against reference statistics.
    c.eval_every = 0  # steps between evaluations (0 disables)
    c.eval_num_samples = 10_000  # samples per evaluation (FID-10K)
    c.eval_reference = ""  # reference statistics .npz (mu, sigma: `ditjax.evaluate --save_stats`)
    c.eval_inception = ""  # pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth)
    c.eval_sampler = "ddpm"  # ddpm | ddim | dpmpp2m
    c.eval_steps = 250  # sampling steps
    c.eval_cfg_scale = 1.5  # guidance scale (1: unguided)
    c.eval_guidance = "first3"  # guided channels: first3 (the reference's FID setting) | all
    c.eval_per_device_batch = 32  # samples per device per chunk

    # Parallelism.
    c.mesh_shape = (-1, 1)  # (data, fsdp) sizes; one -1 takes the remaining devices

    c.seed = 0  # seeds the params, the per-step randomness and the data order
    return c
