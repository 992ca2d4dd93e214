"""Parameter initialisers matching the reference DiT."""

import flax.linen as nn

# Xavier-uniform over a Dense kernel (in, out).
dense_kernel = nn.initializers.xavier_uniform()

# Xavier-uniform over the conv kernel flattened to (p * p * C, D): the reference initialises
# the (D, C * p * p) view, so the receptive field counts towards fan-in only.
patch_kernel = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=-1
)

zeros = nn.initializers.zeros
