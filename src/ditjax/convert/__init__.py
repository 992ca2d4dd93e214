"""Weight I/O: the torch-free `.pt` reader, converters from released PyTorch weights
(official DiT, diffusers VAE, pytorch-fid Inception) to ditjax params, and converted run
directories.

`python -m ditjax.convert` is the command line (see `ditjax.convert.__main__`).
"""

from ditjax.convert.diffusers_vae import diffusers_vae_params, read_diffusers_vae
from ditjax.convert.official_dit import (
    extract_state_dict,
    official_dit_params,
    official_dit_state_dict,
)
from ditjax.convert.pytorch_fid_inception import (
    load_pytorch_fid_inception,
    pytorch_fid_inception_params,
)
from ditjax.convert.torch_checkpoint import load_torch_checkpoint

__all__ = [
    "diffusers_vae_params",
    "extract_state_dict",
    "load_pytorch_fid_inception",
    "load_torch_checkpoint",
    "official_dit_params",
    "official_dit_state_dict",
    "pytorch_fid_inception_params",
    "read_diffusers_vae",
]
