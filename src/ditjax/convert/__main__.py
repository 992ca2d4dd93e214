"""`python -m ditjax.convert official-dit DiT-XL-2-256x256.pt --out DIR [--name DiT-XL/2
--image_size 256]` writes a run directory that `ditjax.sample` and `ditjax.train` load.
"""

from __future__ import annotations

import argparse
import sys

from ditjax.convert.official_dit import extract_state_dict, official_dit_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ditjax.convert", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dit = commands.add_parser("official-dit", help="official DiT .pt -> ditjax run directory")
    dit.add_argument("source", help="DiT-XL-2-256x256.pt, or a reference train.py checkpoint")
    dit.add_argument("--out", required=True, help="run directory to write (a --workdir)")
    dit.add_argument("--name", default="DiT-XL/2", help="model name, e.g. DiT-XL/2")
    dit.add_argument("--image_size", type=int, default=256, help="image side (256 or 512)")
    dit.add_argument("--scan_blocks", action="store_true", help="stack blocks for nn.scan")
    dit.add_argument(
        "--config",
        default=None,
        help="training config file for the run (default: configs/xl2.py of this repository)",
    )
    args = parser.parse_args(argv)

    from ditjax.convert.run_dir import write_converted_run
    from ditjax.convert.torch_checkpoint import load_torch_checkpoint

    try:
        state_dict = extract_state_dict(load_torch_checkpoint(args.source))
        params = official_dit_params(
            state_dict, args.name, image_size=args.image_size, scan_blocks=args.scan_blocks
        )
        path = write_converted_run(
            params,
            args.out,
            name=args.name,
            image_size=args.image_size,
            scan_blocks=args.scan_blocks,
            config_file=args.config,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}; sample with: python -m ditjax.sample --checkpoint={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
