"""benchmarks/paired_official.py: ditjax and a stand-in official DiT timed in alternating
pairs, the official side in a process of its own."""

import json
import statistics
import sys

import jax
import pytest

from benchmark_scripts import benchmark_script
from ditjax.benchmark import model_flops
from ditjax.models import create_model
from official_dit_fixtures import write_fake_checkout


@pytest.fixture
def script():
    # It puts benchmarks/ on sys.path to import official_dit.
    with benchmark_script("paired_official", "official_dit") as module:
        yield module


@pytest.fixture
def checkout(tmp_path):
    folder = tmp_path / "DiT"
    folder.mkdir()
    return write_fake_checkout(folder)


def test_pairs_alternate_which_side_runs_first(script):
    order = []
    seconds = iter([0.5, 0.25, 0.75, 0.125, 0.375, 0.0625])

    def side(name):
        def call():
            order.append(name)
            return next(seconds)

        return call

    references = iter([10.0, 20.0, 30.0])
    pairs = script.time_pairs(
        side("official"), side("ditjax"), lambda: next(references), pairs=3, gap_s=0
    )
    assert order == ["official", "ditjax", "ditjax", "official", "official", "ditjax"]
    assert pairs.official_s == [0.5, 0.125, 0.375]
    assert pairs.ditjax_s == [0.25, 0.75, 0.0625]
    assert pairs.official_first == [True, False, True]
    assert pairs.reference_flops_per_s == [10.0, 20.0, 30.0]


def test_summary_is_per_pair_ratios_and_utilisation(script):
    pairs = script.Pairs(
        official_s=[2.0, 3.0, 2.2, 4.0],
        ditjax_s=[1.0, 3.0, 2.0, 2.0],
        official_first=[True, False, True, False],
        reference_flops_per_s=[100.0, 50.0, 100.0, 25.0],
    )
    summary = script.summarise(pairs, flops_per_call=50.0)
    assert summary["ratios"] == pytest.approx([2.0, 1.0, 1.1, 2.0])
    assert summary["ratio_quartiles"][1] == pytest.approx(1.55)
    assert summary["ratio_quartiles"] == pytest.approx(
        statistics.quantiles([2.0, 1.0, 1.1, 2.0], n=4, method="inclusive")
    )
    assert summary["pairs_at_target"] == 3
    # 50 FLOPs in 1 s against 100 FLOP/s, in 3 s against 50, in 2 s against 100 and 25.
    utilisation = [0.5, 1 / 3, 0.25, 1.0]
    assert summary["ditjax_utilisation_quartiles"][1] == pytest.approx(
        statistics.median(utilisation)
    )
    assert summary["official_ms_median"] == pytest.approx(2600.0)
    assert summary["ditjax_ms_median"] == pytest.approx(2000.0)
    assert summary["reference_gflops_range"] == pytest.approx((25e-9, 100e-9))


def test_times_both_sides_in_pairs_and_writes_json(script, checkout, tmp_path, capsys):
    # The guided forward only: the train step's program (`compile_train_step`) is the
    # benchmark's, which tests/test_bench.py runs, and it takes far longer to compile.
    out = tmp_path / "paired.json"
    flags = [
        f"--dit_dir={checkout}",
        f"--official_python={sys.executable}",  # the test environment has torch
        "--mode=forward",
        "--model=DiT-S/8",
        "--latent_size=16",
        "--batch_size=2",
        "--pairs=3",
        "--warmup=1",
        "--gap_s=0",
        f"--out={out}",
    ]
    results = script.main(flags)
    assert "train" not in results
    summary = results["forward"]
    assert summary["pairs"] == 3
    assert len(summary["official_s"]) == len(summary["ditjax_s"]) == 3
    assert all(s > 0 for s in summary["official_s"] + summary["ditjax_s"])
    assert summary["official_first"] == [True, False, True]
    assert 0 < summary["ditjax_utilisation_quartiles"][1] < 10
    # The guided forward's FLOPs as the benchmark counts them: 2 passes per image, 2 images.
    flops = model_flops(create_model("DiT-S/8", input_size=16), images=2, forwards_per_image=2)
    utilisation = [
        flops / d / r
        for d, r in zip(summary["ditjax_s"], summary["reference_flops_per_s"], strict=True)
    ]
    assert summary["ditjax_utilisation_quartiles"][1] == pytest.approx(
        statistics.median(utilisation)
    )
    assert json.loads(out.read_text())["forward"]["ratios"] == pytest.approx(summary["ratios"])
    assert "forward: 3 pairs" in capsys.readouterr().out


def test_a_failing_official_process_is_named(script, checkout, tmp_path):
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 3\n")
    broken.chmod(0o755)
    flags = [f"--dit_dir={checkout}", f"--official_python={broken}", "--model=DiT-S/8"]
    with pytest.raises(RuntimeError, match=r"broken-python\) exited with status 3"):
        script.main(flags)


def test_the_client_skips_other_output_and_names_an_exit_mid_run(script, checkout, tmp_path):
    worker = tmp_path / "worker"
    worker.write_text(
        "#!/bin/sh\necho loading\necho ready\nread request\necho 'a warning'\necho 0.25\n"
        "read request\nexit 4\n"
    )
    worker.chmod(0o755)
    args = script.parse_args([f"--dit_dir={checkout}", f"--official_python={worker}"])
    official = script.OfficialProcess(args)
    try:
        assert official.run("train") == 0.25
        with pytest.raises(RuntimeError, match=r"worker\) exited with status 4"):
            official.run("train")
    finally:
        official.close()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dit_dir=/no/such/DiT"], "'/no/such/DiT' is not a DiT checkout"),
        (["--pairs=0"], "--pairs must be >= 1"),
        (["--mode=train,sample"], "--mode must be a comma list"),
        (["--official_python=/no/such/python"], "'/no/such/python' is not an executable"),
        (["--out=/no/such/folder/x.json"], "no such folder"),
        (["--gap_s=-1"], "--gap_s must be >= 0"),
        (["--official_python="], "'' is not an executable"),
    ],
)
def test_bad_flags_are_usage_errors_naming_them(script, checkout, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([f"--dit_dir={checkout}", f"--official_python={sys.executable}", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_mode_named_twice_runs_once(script, checkout):
    args = script.parse_args(
        [f"--dit_dir={checkout}", f"--official_python={sys.executable}", "--mode=forward,,forward"]
    )
    assert args.modes == ("forward",)


def test_the_official_python_must_be_named(script, checkout, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args([f"--dit_dir={checkout}"])
    assert exit_info.value.code == 2
    assert "--official_python" in capsys.readouterr().err


def test_a_non_cpu_backend_is_refused_before_the_official_process_starts(
    script, checkout, monkeypatch
):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    flags = [f"--dit_dir={checkout}", "--official_python=/bin/false"]
    with pytest.raises(SystemExit, match="backend is gpu: run it with JAX_PLATFORMS=cpu"):
        script.main(flags)


def test_an_unknown_model_is_named_before_the_official_process_starts(script, checkout):
    with pytest.raises(SystemExit, match="DiT-Q/9"):
        script.main([f"--dit_dir={checkout}", "--model=DiT-Q/9", "--official_python=/bin/false"])
