"""Times the official PyTorch DiT the way `python -m ditjax.bench --mode=train,forward` times
ditjax, for the side-by-side table in the README.

    python benchmarks/official_dit.py --dit_dir=path/to/DiT --repeats=5

`--dit_dir` is a checkout of github.com/facebookresearch/DiT (its `models.py` and
`diffusion/` are used unmodified; they need torch and timm). Measured on synthetic latents
(N, 4, H, W) and labels:
- `train`: one step of its `train.py`: `training_losses` (hybrid loss), backward, AdamW
  (lr 1e-4, no weight decay), then the EMA update (`update_ema`);
- `forward`: its `forward_with_cfg` on 2 x N (conditional and null-label halves);
- `matmul`: a float32 2048^3 matrix product, the reference rate of the same run.
Prints the median milliseconds of `--repeats` calls after `--warmup` untimed ones. With
`--serve` it instead runs one call per line of its standard input (`train`, `forward` or
`matmul`; `quit` ends it) and answers each with the call's seconds on a line of its own, for
`paired_official.py`, which alternates these calls with ditjax's.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

MATMUL_SIZE = 2048
EMA_DECAY = 0.9999


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dit_dir", required=True, help="a checkout of facebookresearch/DiT")
    parser.add_argument("--model", default="DiT-S/2", help="a key of its models.DiT_models")
    parser.add_argument("--latent_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--cfg_scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: its default")
    parser.add_argument(
        "--serve", action="store_true", help="answer one call per line of stdin with its seconds"
    )
    args = parser.parse_args(argv)
    for name in ("latent_size", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0:
        parser.error(f"--warmup and --threads must be >= 0, got {args.warmup}, {args.threads}")
    problem = checkout_problem(args.dit_dir)
    if problem:
        parser.error(problem)
    return args


def checkout_problem(dit_dir: str) -> str:
    """Why `dit_dir` is not a DiT checkout with the files this script uses, or ""."""
    missing = [
        part
        for part in ("models.py", os.path.join("diffusion", "__init__.py"))
        if not os.path.isfile(os.path.join(dit_dir, part))
    ]
    if missing:
        return f"--dit_dir {dit_dir!r} is not a DiT checkout: no {', '.join(missing)}"
    return ""


def median_ms(call: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median wall time of `repeats` calls of `call` after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def load_official(dit_dir: str) -> tuple[Any, Any]:
    """The checkout's `models` and `diffusion` modules."""
    sys.path.insert(0, os.path.abspath(dit_dir))
    return importlib.import_module("models"), importlib.import_module("diffusion")


def update_ema(ema: Any, model: Any, decay: float = EMA_DECAY) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, as its train.py."""
    import torch

    with torch.no_grad():
        ema_params = dict(ema.named_parameters())
        for name, param in model.named_parameters():
            ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)


def make_calls(args: argparse.Namespace, models: Any, diffusion_module: Any) -> dict[str, Callable]:
    """The three timed calls: `train`, `forward` and `matmul`."""
    import torch

    torch.manual_seed(0)
    if args.model not in models.DiT_models:
        raise SystemExit(f"error: --model {args.model!r} is not one of {sorted(models.DiT_models)}")
    num_classes = 1000
    model = models.DiT_models[args.model](input_size=args.latent_size, num_classes=num_classes)
    ema = copy.deepcopy(model).requires_grad_(False)
    diffusion = diffusion_module.create_diffusion(timestep_respacing="")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    n = args.batch_size
    x = torch.randn(n, 4, args.latent_size, args.latent_size)
    y = torch.randint(0, num_classes, (n,))

    def train() -> None:
        model.train()
        t = torch.randint(0, diffusion.num_timesteps, (n,))
        loss = diffusion.training_losses(model, x, t, dict(y=y))["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_ema(ema, model)

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            labels = torch.cat([y, torch.full_like(y, num_classes)])
            t = torch.randint(0, diffusion.num_timesteps, (2 * n,))
            model.forward_with_cfg(torch.cat([x, x]), t, labels, args.cfg_scale)

    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    return {"train": train, "forward": forward, "matmul": lambda: a @ b}


READY = "ready"
QUIT = "quit"


def serve(calls: dict[str, Callable], requests: TextIO, answers: TextIO) -> int:
    """Runs `calls[name]` for each line `name` of `requests` until `quit` or the end, and
    writes each call's seconds as a line of `answers` (an unknown name gets a line starting
    with "error"). Returns the number of calls run."""
    answers.write(READY + "\n")
    answers.flush()
    count = 0
    for line in requests:
        name = line.strip()
        if name == QUIT:
            break
        if name not in calls:
            answers.write(f"error: no call {name!r}; one of {sorted(calls)}\n")
        else:
            start = time.perf_counter()
            calls[name]()
            answers.write(f"{time.perf_counter() - start!r}\n")
            count += 1
        answers.flush()
    return count


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit("error: the official DiT needs torch (and timm) installed") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    calls = make_calls(args, *load_official(args.dit_dir))
    if args.serve:
        serve(calls, sys.stdin, sys.stdout)
        return {}
    results = {name: median_ms(call, args.repeats, args.warmup) for name, call in calls.items()}
    print(f"official {args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads:")
    print(f"  train step       {results['train']:8.0f} ms")
    print(f"  guided forward   {results['forward']:8.0f} ms (2 x {args.batch_size})")
    rate = 2 * MATMUL_SIZE**3 / (results["matmul"] / 1000) / 1e9
    print(f"  {MATMUL_SIZE}^3 matmul    {rate:8.0f} GFLOP/s")
    return results


if __name__ == "__main__":
    main()
