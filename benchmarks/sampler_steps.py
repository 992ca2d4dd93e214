"""Class match against sampling steps, for DDPM, DDIM and DPM-Solver++(2M), from one run.

    python benchmarks/sampler_steps.py --checkpoint=demo_run/run --out=benchmarks/sampler_steps.png

Trains nothing: loads a demo-set run (`make demo` writes `demo_run/run`), samples
`--num_per_class` images of every class with each sampler at each number of steps (the same
labels and seed every time), and scores each set as `python -m ditjax.demo` does: the share of
samples that the demo classifier, fitted once on real demo images, assigns to the class they
were conditioned on. Writes a JSON `{sampler: {steps: class_match}}`, a PNG line plot (x:
steps, log scale; y: class match) and prints the numbers as a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_STEPS = (5, 10, 20, 50, 100, 250)
# Display name and line colour of every sampler of `ditjax.sampling.SAMPLERS`.
SAMPLER_STYLES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "ddpm": ("DDPM", (31, 119, 180)),
    "ddim": ("DDIM", (255, 127, 14)),
    "dpmpp2m": ("DPM-Solver++(2M)", (44, 160, 44)),
}
CLASSIFIER_SEED = 1234  # the real images the demo fits its classifier on

Results = dict[str, dict[int, float]]

# Plot geometry, in pixels: the frame's margins (left, top, right, bottom) and the padding
# between the frame and the outermost points.
_MARGINS = (72, 48, 190, 62)
_PAD = 14
_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_CHANCE = (150, 150, 150)


def parse_steps(text: str) -> list[int]:
    """ "5,10,20" -> [5, 10, 20]: distinct positive integers, sorted."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--steps must be positive integers separated by commas, got {text!r}")
        values.append(int(item))
    return sorted(set(values))


def parse_samplers(text: str) -> list[str]:
    """ "ddpm,ddim" -> ["ddpm", "ddim"]: known sampler names, in the order given, once each."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SAMPLER_STYLES]
    if unknown or not names:
        raise ValueError(
            f"--samplers must name samplers among {', '.join(SAMPLER_STYLES)}, got {text!r}"
        )
    return list(dict.fromkeys(names))


def _check_results(results: Results) -> None:
    if not results or not all(results.values()):
        raise ValueError("results must hold at least one step count for every sampler")
    for sampler, row in results.items():
        if sampler not in SAMPLER_STYLES:
            raise ValueError(f"unknown sampler {sampler!r} in results")
        for steps, value in row.items():
            if int(steps) < 1 or not 0.0 <= value <= 1.0:
                raise ValueError(f"{sampler} at {steps} steps: class match {value} not in [0, 1]")


def _axes(results: Results, size: tuple[int, int]) -> tuple[Callable[[int], int], int, int]:
    """(pixel column of a step count, row of class match 1, row of class match 0)."""
    _check_results(results)
    width, height = size
    left, top, right, bottom = _MARGINS
    x0, x1 = left + _PAD, width - right - _PAD
    y0, y1 = top + _PAD, height - bottom - _PAD
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"plot size {size} is too small")
    all_steps = [int(s) for row in results.values() for s in row]
    lo, hi = math.log(min(all_steps)), math.log(max(all_steps))

    def x_of(steps: int) -> int:
        if hi == lo:
            return (x0 + x1) // 2
        return round(x0 + (math.log(steps) - lo) / (hi - lo) * (x1 - x0))

    return x_of, y0, y1


def _y_of(value: float, y0: int, y1: int) -> int:
    return round(y1 - value * (y1 - y0))


def plot_points(results: Results, size: tuple[int, int]) -> dict[str, list[tuple[int, int]]]:
    """Pixel (x, y) of each sampler's points, in increasing steps, in a plot of `size`
    (width, height): x logarithmic in steps, y linear in class match (1 at the top)."""
    x_of, y0, y1 = _axes(results, size)
    return {
        sampler: [(x_of(int(s)), _y_of(row[s], y0, y1)) for s in sorted(row, key=int)]
        for sampler, row in results.items()
    }


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no font files needed


def _text(draw: ImageDraw.ImageDraw, xy, text: str, font, anchor: str, fill=_INK) -> None:
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def plot_class_match(
    results: Results,
    *,
    title: str,
    size: tuple[int, int] = (800, 480),
    chance: float | None = None,
) -> Image.Image:
    """RGB line plot of `results` {sampler: {steps: class match}}: one polyline with point
    markers per sampler, log-scale steps on x, class match 0..1 on y, a legend on the right,
    and a dashed line at `chance` when given."""
    points = plot_points(results, size)
    x_of, y0, y1 = _axes(results, size)
    width, height = size
    left, top, right, bottom = _MARGINS
    frame = (left, top, width - right, height - bottom)
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, normal = _font(12), _font(14)

    for tick in np.linspace(0.0, 1.0, 6):
        y = _y_of(float(tick), y0, y1)
        draw.line([(frame[0], y), (frame[2], y)], fill=_GRID)
        draw.line([(frame[0] - 5, y), (frame[0], y)], fill=_INK)
        _text(draw, (frame[0] - 8, y), f"{tick:.1f}", small, "rm")
    for steps in sorted({int(s) for row in results.values() for s in row}):
        x = x_of(steps)
        draw.line([(x, frame[1]), (x, frame[3])], fill=_GRID)
        draw.line([(x, frame[3]), (x, frame[3] + 5)], fill=_INK)
        _text(draw, (x, frame[3] + 8), str(steps), small, "mt")
    if chance is not None:
        y = _y_of(chance, y0, y1)
        for x in range(frame[0], frame[2], 10):
            draw.line([(x, y), (min(x + 5, frame[2]), y)], fill=_CHANCE)
        _text(draw, (frame[2] - 4, y - 3), "chance", small, "rb", fill=_CHANCE)
    draw.rectangle(frame, outline=_INK)

    for sampler, xys in points.items():
        colour = SAMPLER_STYLES[sampler][1]
        if len(xys) > 1:
            draw.line(xys, fill=colour, width=2, joint="curve")
    for sampler, xys in points.items():
        colour = SAMPLER_STYLES[sampler][1]
        for x, y in xys:
            draw.ellipse([(x - 4, y - 4), (x + 4, y + 4)], fill=colour)

    legend_x, legend_y = frame[2] + 16, frame[1] + 8
    for i, sampler in enumerate(points):
        name, colour = SAMPLER_STYLES[sampler]
        y = legend_y + 22 * i
        draw.line([(legend_x, y), (legend_x + 28, y)], fill=colour, width=2)
        draw.ellipse([(legend_x + 10, y - 4), (legend_x + 18, y + 4)], fill=colour)
        _text(draw, (legend_x + 36, y), name, small, "lm")

    _text(draw, (width // 2, top // 2), title, normal, "mm")
    x_label = "sampling steps (log scale)"
    _text(draw, ((frame[0] + frame[2]) // 2, height - 16), x_label, normal, "mb")
    label_width = int(draw.textlength("class match", font=normal)) + 4
    label = Image.new("RGB", (label_width, 20), _BACKGROUND)
    ImageDraw.Draw(label).text((2, 10), "class match", font=normal, fill=_INK, anchor="lm")
    label = label.rotate(90, expand=True)
    image.paste(label, (8, (frame[1] + frame[3] - label.height) // 2))
    return image


def markdown_table(results: Results) -> str:
    """Rows: steps; columns: samplers; cells: class match ("-" where a pair was not run)."""
    samplers = list(results)
    all_steps = sorted({int(s) for row in results.values() for s in row})
    lines = [
        "| steps | " + " | ".join(SAMPLER_STYLES[s][0] for s in samplers) + " |",
        "| ---: | " + " | ".join("---:" for _ in samplers) + " |",
    ]
    for steps in all_steps:
        cells = [f"{results[s][steps]:.3f}" if steps in results[s] else "-" for s in samplers]
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_run(checkpoint: str, step: int | None = None) -> tuple[dict, int]:
    """(the saved config, the checkpoint step: `step` or the latest) without loading weights."""
    from ditjax.training.restore import saved_config

    return saved_config(checkpoint, step=step)


def check_run(config: dict, steps: list[int]) -> None:
    """Raises ValueError unless the demo classifier can score the run's samples at `steps`."""
    from ditjax.data.demo_shapes import DEMO_CLASS_NAMES

    if config["num_classes"] != len(DEMO_CLASS_NAMES):
        raise ValueError(
            f"--checkpoint: the run has {config['num_classes']} classes; the demo classifier "
            f"knows the demo set's {len(DEMO_CLASS_NAMES)}"
        )
    if config["image_size"] % 8:
        raise ValueError(
            f"--checkpoint: the run's image_size {config['image_size']} is not a multiple of 8, "
            "which the demo classifier needs"
        )
    too_many = [s for s in steps if s > config["diffusion_steps"]]
    if too_many:
        raise ValueError(
            f"--steps {too_many} exceed the run's {config['diffusion_steps']} diffusion steps"
        )


def class_match_sweep(
    checkpoint: str,
    samplers: list[str],
    steps: list[int],
    *,
    image_size: int,
    step: int | None = None,
    num_per_class: int = 20,
    cfg_scale: float = 4.0,
    seed: int = 0,
    classifier_per_class: int = 500,
    classifier_steps: int = 500,
    log: Callable[[str], None] = print,
) -> Results:
    """{sampler: {steps: class match}}: `num_per_class` samples of each of the 10 demo classes
    per pair, with the same labels and seed, scored by one demo classifier fitted on
    `classifier_per_class` real images per class at `image_size`."""
    from ditjax.data.demo_shapes import DEMO_CLASS_NAMES, demo_images_at, generate_demo_images
    from ditjax.evaluation.demo_classifier import classify, train_demo_classifier
    from ditjax.sample import sample_images

    train_images, train_labels = generate_demo_images(classifier_per_class, seed=CLASSIFIER_SEED)
    train_images = demo_images_at(train_images, image_size)
    classifier = train_demo_classifier(train_images, train_labels, seed=0, steps=classifier_steps)
    num_classes = len(DEMO_CLASS_NAMES)
    labels = [c for _ in range(num_per_class) for c in range(num_classes)]
    results: Results = {}
    for sampler in samplers:
        results[sampler] = {}
        for n in steps:
            images = sample_images(
                checkpoint,
                labels,
                step=step,
                cfg_scale=cfg_scale,
                sampler=sampler,
                steps=n,
                seed=seed,
            )
            if images.shape[1:] != train_images.shape[1:]:
                raise ValueError(
                    f"samples are {images.shape[1:]}, the classifier's images "
                    f"{train_images.shape[1:]}"
                )
            predicted = np.asarray(classify(classifier, images))
            results[sampler][n] = float(np.mean(predicted == np.asarray(labels)))
            log(f"{sampler} {n:4d} steps: class match {results[sampler][n]:.3f}")
    return results


def write_outputs(results: Results, image: Image.Image, png: str, json_path: str) -> None:
    """The plot as a PNG and the results as JSON (steps as string keys), each atomically."""
    from ditjax.atomic_files import write_json
    from ditjax.image_grid import save_png

    save_png(np.asarray(image.convert("RGB")), png)
    write_json(json_path, {s: {str(n): v for n, v in row.items()} for s, row in results.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="demo_run/run", help="a run's workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--out", default="benchmarks/sampler_steps.png", help="PNG plot to write")
    parser.add_argument("--json", default=None, help="JSON to write (default: --out as .json)")
    parser.add_argument(
        "--steps", default=",".join(map(str, DEFAULT_STEPS)), help="sampling steps, comma-separated"
    )
    parser.add_argument(
        "--samplers", default=",".join(SAMPLER_STYLES), help="samplers, comma-separated"
    )
    parser.add_argument("--num_per_class", type=int, default=20, help="samples of each class")
    parser.add_argument("--cfg_scale", type=float, default=4.0, help="guidance scale (1: none)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for all")
    parser.add_argument(
        "--classifier_per_class", type=int, default=500, help="real images per class to fit on"
    )
    parser.add_argument("--classifier_steps", type=int, default=500, help="classifier fit steps")
    args = parser.parse_args(argv)
    try:
        steps = parse_steps(args.steps)
        samplers = parse_samplers(args.samplers)
    except ValueError as error:
        parser.error(str(error))
    for flag in ("num_per_class", "classifier_per_class", "classifier_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    if not args.cfg_scale >= 1.0:
        parser.error(f"--cfg_scale must be >= 1, got {args.cfg_scale}")
    if not args.out.endswith(".png"):
        parser.error(f"--out must end in .png, got {args.out!r}")
    json_path = args.json or os.path.splitext(args.out)[0] + ".json"
    if not os.path.isdir(args.checkpoint):
        parser.error(f"--checkpoint: no run directory {args.checkpoint} (`make demo` writes one)")

    try:
        config, step = read_run(args.checkpoint, args.step)
        check_run(config, steps)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    results = class_match_sweep(
        args.checkpoint,
        samplers,
        steps,
        image_size=config["image_size"],
        step=step,
        num_per_class=args.num_per_class,
        cfg_scale=args.cfg_scale,
        seed=args.seed,
        classifier_per_class=args.classifier_per_class,
        classifier_steps=args.classifier_steps,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    title = (
        f"Class match against sampling steps: {args.checkpoint} at step {step}, "
        f"cfg {args.cfg_scale:g}, {args.num_per_class} per class"
    )
    image = plot_class_match(results, title=title, chance=1.0 / config["num_classes"])
    write_outputs(results, image, args.out, json_path)
    print(markdown_table(results))
    print(f"\nwrote {args.out} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
