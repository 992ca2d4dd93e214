"""`python -m ditjax.models`: parameters and forward cost of the twelve DiT variants at 256 px."""

from __future__ import annotations

import argparse

from ditjax.models.costs import (
    abstract_params,
    count_parameters,
    forward_macs,
    position_table_size,
)
from ditjax.models.registry import MODEL_NAMES, create_model

LATENT_DOWNSAMPLE = 8


def variant_table(image_size: int = 256) -> list[dict]:
    """One row per variant: parameters (with and without the position table) and cost."""
    latent = image_size // LATENT_DOWNSAMPLE
    rows = []
    for name in MODEL_NAMES:
        model = create_model(name, input_size=latent)
        params = count_parameters(abstract_params(model))
        macs = forward_macs(model)
        rows.append(
            {
                "name": name,
                "trainable": params,
                "with_pos_table": params + position_table_size(model),
                "gmacs": macs / 1e9,
                "gflop": 2 * macs / 1e9,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image_size", type=int, default=256, help="image side in pixels")
    args = parser.parse_args()
    print(f"DiT variants at {args.image_size}x{args.image_size} (latent /{LATENT_DOWNSAMPLE})")
    header = (
        f"{'model':<10} {'params':>14} {'params+pos':>14} {'paper Gflops (GMAC)':>20} {'GFLOP':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in variant_table(args.image_size):
        print(
            f"{row['name']:<10} {row['trainable']:>14,} {row['with_pos_table']:>14,} "
            f"{row['gmacs']:>20.1f} {row['gflop']:>9.1f}"
        )
    print("params+pos counts the fixed position table, as the reference's totals do.")
    print("Paper 'Gflops' count one multiply-add as one operation; GFLOP is twice that.")


if __name__ == "__main__":
    main()
