"""Data: ADM crop, image sources, latent extraction, the input pipeline and the demo set."""

from ditjax.data.adm_crop import center_crop_adm, to_model_range
from ditjax.data.latent_format import read_latent_info
from ditjax.data.pipeline import make_train_iterator, open_latent_source

__all__ = [
    "center_crop_adm",
    "make_train_iterator",
    "open_latent_source",
    "read_latent_info",
    "to_model_range",
]
