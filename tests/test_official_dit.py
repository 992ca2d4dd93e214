"""benchmarks/official_dit.py: the official DiT's train step and guided forward timed on a
stand-in checkout with the same entry points."""

import io

import pytest
import torch

from benchmark_scripts import benchmark_script
from official_dit_fixtures import write_fake_checkout


@pytest.fixture
def script():
    # load_official puts the checkout on sys.path and imports its models and diffusion.
    with benchmark_script("official_dit", "models", "diffusion") as module:
        yield module


@pytest.fixture
def checkout(tmp_path):
    return write_fake_checkout(tmp_path)


def test_times_train_forward_and_matmul(script, checkout, capsys):
    results = script.main(["--dit_dir", str(checkout), "--repeats", "2", "--warmup", "1"])
    assert set(results) == {"train", "forward", "matmul"}
    assert all(ms > 0 for ms in results.values())
    out = capsys.readouterr().out
    assert "train step" in out and "guided forward" in out and "GFLOP/s" in out


def test_train_steps_the_optimizer_and_forward_doubles_the_batch_with_null_labels(script, checkout):
    args = script.parse_args(["--dit_dir", str(checkout), "--batch_size", "3"])
    models, diffusion = script.load_official(args.dit_dir)
    calls = script.make_calls(args, models, diffusion)
    model = models.INSTANCES[-1]
    before = model.conv.weight.detach().clone()
    calls["train"]()
    assert not torch.equal(model.conv.weight, before)
    assert model.training
    calls["forward"]()
    labels = model.seen_labels[-1]
    assert labels.shape == (6,)
    assert torch.all(labels[3:] == 1000) and torch.all(labels[:3] < 1000)
    assert not model.training


def test_serve_answers_each_call_with_its_seconds_until_quit(script, checkout):
    args = script.parse_args(["--dit_dir", str(checkout), "--batch_size", "2", "--serve"])
    calls = script.make_calls(args, *script.load_official(args.dit_dir))
    answers = io.StringIO()
    requests = io.StringIO("train\nbogus\nforward\nquit\nmatmul\n")
    assert script.serve(calls, requests, answers) == 2
    lines = answers.getvalue().splitlines()
    assert len(lines) == 4  # ready, then one line per request before quit
    assert lines[0] == script.READY
    assert float(lines[1]) > 0 and float(lines[3]) > 0
    assert lines[2].startswith("error") and "'bogus'" in lines[2]


def test_update_ema_moves_each_parameter_by_one_minus_decay(script):
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    weights = dict(model.named_parameters())
    expected = {
        n: 0.75 * e.detach() + 0.25 * weights[n].detach() for n, e in ema.named_parameters()
    }
    script.update_ema(ema, model, decay=0.75)
    for name, param in ema.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dit_dir", "/no/such/DiT"], "'/no/such/DiT' is not a DiT checkout"),
        (["--dit_dir", ".", "--repeats", "0"], "--repeats must be >= 1"),
    ],
)
def test_bad_flags_are_usage_errors_naming_them(script, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_model_is_named(script, checkout):
    with pytest.raises(SystemExit, match="'DiT-Q/9' is not one of"):
        script.main(["--dit_dir", str(checkout), "--model", "DiT-Q/9"])
