"""DiT models: `create_model(name, **overrides)` and its parts."""

from ditjax.models.attention import ATTENTION_IMPLS, check_attention_impl
from ditjax.models.blocks import BLOCK_TYPES, FinalLayer
from ditjax.models.costs import (
    abstract_params,
    count_parameters,
    forward_macs,
    position_table_size,
)
from ditjax.models.dit import REMAT_POLICIES, DiT, unpatchify
from ditjax.models.embeddings import sincos_2d_position_table, timestep_frequencies
from ditjax.models.registry import DIT_SIZES, MODEL_NAMES, create_model, parse_model_name

__all__ = [
    "ATTENTION_IMPLS",
    "BLOCK_TYPES",
    "DIT_SIZES",
    "MODEL_NAMES",
    "REMAT_POLICIES",
    "DiT",
    "FinalLayer",
    "abstract_params",
    "check_attention_impl",
    "count_parameters",
    "create_model",
    "forward_macs",
    "parse_model_name",
    "position_table_size",
    "sincos_2d_position_table",
    "timestep_frequencies",
    "unpatchify",
]
