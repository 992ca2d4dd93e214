"""Data: ADM crop, image sources, latent extraction, the input pipeline and the demo set."""

from ditjax.data.adm_crop import center_crop_adm, to_model_range
from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, DemoShapes, generate_demo_images
from ditjax.data.extract import ExtractionSummary, extract_latents
from ditjax.data.latent_format import read_latent_info
from ditjax.data.pipeline import (
    iterator_checkpoint_args,
    iterator_checkpoint_handler,
    make_train_iterator,
    open_latent_source,
    process_record_indices,
)
from ditjax.data.sources import FolderSource, SourceExample, TfdsSource, open_source

__all__ = [
    "DEMO_CLASS_NAMES",
    "DemoShapes",
    "ExtractionSummary",
    "FolderSource",
    "SourceExample",
    "TfdsSource",
    "center_crop_adm",
    "extract_latents",
    "generate_demo_images",
    "iterator_checkpoint_args",
    "iterator_checkpoint_handler",
    "make_train_iterator",
    "open_latent_source",
    "open_source",
    "process_record_indices",
    "read_latent_info",
    "to_model_range",
]
