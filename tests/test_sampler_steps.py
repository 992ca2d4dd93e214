"""benchmarks/sampler_steps.py: class match against sampling steps, its plot and its table."""

import itertools
import json
import math

import pytest
from PIL import Image

from benchmark_scripts import benchmark_script
from ditjax.sampling import SAMPLERS
from sampling_fixtures import write_random_run

RESULTS = {
    "ddpm": {5: 0.1, 10: 0.3, 20: 0.5, 50: 0.7, 100: 0.8, 250: 0.9},
    "ddim": {5: 0.35, 10: 0.55, 20: 0.75, 50: 0.95, 100: 0.6, 250: 0.45},
    "dpmpp2m": {5: 0.65, 10: 0.85, 20: 0.25, 50: 0.15, 100: 0.05, 250: 0.2},
}


@pytest.fixture(scope="module")
def script():
    with benchmark_script("sampler_steps") as module:
        yield module


def test_every_library_sampler_has_a_style(script):
    assert set(script.SAMPLER_STYLES) == set(SAMPLERS)
    colours = [colour for _, colour in script.SAMPLER_STYLES.values()]
    assert len(set(colours)) == len(colours)


@pytest.mark.parametrize("size", [(800, 480), (640, 400)])
def test_plot_has_each_colour_at_its_points(script, size):
    image = script.plot_class_match(RESULTS, title="step 7", size=size, chance=0.1)
    assert image.size == size and image.mode == "RGB"
    points = script.plot_points(RESULTS, size)
    assert list(points) == list(RESULTS)
    for sampler, xys in points.items():
        colour = script.SAMPLER_STYLES[sampler][1]
        assert len(xys) == len(RESULTS[sampler])
        for x, y in xys:
            assert 0 <= x < size[0] and 0 <= y < size[1]
            assert image.getpixel((x, y)) == colour, (sampler, x, y)


def test_points_are_log_spaced_in_steps_and_rise_with_class_match(script):
    points = script.plot_points(RESULTS, (800, 480))
    steps = sorted(RESULTS["ddpm"])
    xs = [x for x, _ in points["ddpm"]]
    assert all(a < b for a, b in itertools.pairwise(xs))
    for sampler in RESULTS:
        assert [x for x, _ in points[sampler]] == xs  # same steps, same columns
    # Equal step ratios, equal distances (to the pixel): 5 -> 10 and 10 -> 20 are both 2x.
    assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) <= 1
    per_log = (xs[-1] - xs[0]) / math.log(steps[-1] / steps[0])
    assert abs((xs[3] - xs[2]) - per_log * math.log(50 / 20)) <= 1
    # Higher class match is higher up (smaller row); ddpm's values increase with steps.
    ys = [y for _, y in points["ddpm"]]
    assert all(a > b for a, b in itertools.pairwise(ys))


def test_single_step_count_and_one_sampler_plot(script):
    results = {"ddim": {50: 1.0}}
    image = script.plot_class_match(results, title="one", size=(500, 300))
    ((x, y),) = script.plot_points(results, (500, 300))["ddim"]
    assert image.size == (500, 300) and image.getpixel((x, y)) == (255, 127, 14)


@pytest.mark.parametrize(
    "results, match",
    [
        ({"ddpm": {5: 1.5}}, r"not in \[0, 1\]"),
        ({"ddpm": {5: -0.1}}, r"not in \[0, 1\]"),
        ({"euler": {5: 0.5}}, "unknown sampler 'euler'"),
        ({"ddpm": {}}, "at least one"),
        ({}, "at least one"),
    ],
)
def test_plot_rejects_bad_results(script, results, match):
    with pytest.raises(ValueError, match=match):
        script.plot_class_match(results, title="bad")


def test_markdown_table_has_a_row_per_step_and_a_column_per_sampler(script):
    results = {"ddim": {10: 0.25, 5: 0.125}, "ddpm": {5: 0.5}}
    lines = script.markdown_table(results).splitlines()
    assert lines[0] == "| steps | DDIM | DDPM |"
    assert lines[1].count("---:") == 3
    assert lines[2:] == ["| 5 | 0.125 | 0.500 |", "| 10 | 0.250 | - |"]


def test_parse_steps_and_samplers(script):
    assert script.parse_steps("20, 5,10,5") == [5, 10, 20]
    assert script.parse_samplers("dpmpp2m,ddpm,ddpm") == ["dpmpp2m", "ddpm"]


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--samplers=ddpm,euler"], "--samplers"),
        (["--samplers="], "--samplers"),
        (["--steps=5,0"], "--steps"),
        (["--steps=5,ten"], "--steps"),
        (["--steps=-3"], "--steps"),
        (["--num_per_class=0"], "--num_per_class"),
        (["--cfg_scale=0.5"], "--cfg_scale"),
        (["--out=plot.jpg"], "--out"),
        (["--checkpoint=MISSING"], "--checkpoint"),
    ],
)
def test_bad_arguments_fail_before_reading_the_run(
    script, tmp_path, monkeypatch, capsys, flags, flag
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the run was read before the arguments were checked")

    monkeypatch.setattr(script, "read_run", must_not_run)
    monkeypatch.setattr(script, "class_match_sweep", must_not_run)
    argv = [f"--checkpoint={tmp_path}", f"--out={tmp_path / 'p.png'}"]
    argv += [f.replace("MISSING", str(tmp_path / "absent")) for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    return write_random_run(tmp_path_factory.mktemp("random_run"))


def test_run_that_cannot_be_scored_fails_before_sampling(
    script, random_run, tmp_path, monkeypatch, capsys
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("sampled although the steps cannot be run")

    monkeypatch.setattr(script, "class_match_sweep", must_not_run)
    argv = [f"--checkpoint={random_run}", f"--out={tmp_path / 'p.png'}", "--steps=5,2000"]
    with pytest.raises(SystemExit):
        script.main(argv)
    assert "--steps [2000]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main([*argv[:2], "--steps=5", "--step=3"])
    assert "no checkpoint for step 3" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        script.main([f"--checkpoint={empty}", argv[1]])
    assert "no checkpoints in" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_end_to_end_on_a_random_run(script, random_run, tmp_path, capsys):
    out = tmp_path / "plots" / "steps.png"
    code = script.main(
        [
            f"--checkpoint={random_run}",
            f"--out={out}",
            "--steps=4,2",
            "--num_per_class=1",
            "--classifier_per_class=10",
            "--classifier_steps=20",
        ]
    )
    assert code == 0
    results = json.loads(out.with_suffix(".json").read_text())
    assert list(results) == ["ddpm", "ddim", "dpmpp2m"]
    for row in results.values():
        assert list(row) == ["2", "4"]
        for value in row.values():
            # 10 samples (one per class): a multiple of 1/10 in [0, 1].
            assert 0.0 <= value <= 1.0 and abs(value * 10 - round(value * 10)) < 1e-9
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 480)
    assert sorted(p.name for p in out.parent.iterdir()) == ["steps.json", "steps.png"]
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| steps | DDPM | DDIM | DPM-Solver++(2M) |"
    assert table[2] == "| 2 | " + " | ".join(f"{results[s]['2']:.3f}" for s in results) + " |"
    assert table[3].startswith("| 4 | ")
