"""benchmarks/official_dit.py: the official DiT's train step and guided forward timed on a
stand-in checkout with the same entry points."""

import importlib.util
import pathlib
import sys
import textwrap

import pytest
import torch

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "official_dit.py"

FAKE_MODELS = """
import torch

INSTANCES = []


class TinyDiT(torch.nn.Module):
    def __init__(self, input_size, num_classes):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.embed = torch.nn.Embedding(num_classes + 1, 4)
        self.seen_labels = []
        INSTANCES.append(self)

    def forward(self, x, t, y):
        self.seen_labels.append(y.clone())
        return self.conv(x) + self.embed(y)[:, :, None, None]

    def forward_with_cfg(self, x, t, y, cfg_scale):
        return self.forward(x, t, y)


DiT_models = {"DiT-S/2": TinyDiT}
"""

FAKE_DIFFUSION = """
class _Diffusion:
    num_timesteps = 1000

    def training_losses(self, model, x, t, model_kwargs):
        return {"loss": ((model(x, t, **model_kwargs) - x) ** 2).mean(dim=(1, 2, 3))}


def create_diffusion(timestep_respacing):
    assert timestep_respacing == ""
    return _Diffusion()
"""


@pytest.fixture
def script(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("models", "diffusion"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location("official_dit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    for name in ("models", "diffusion"):
        sys.modules.pop(name, None)


@pytest.fixture
def checkout(tmp_path):
    (tmp_path / "models.py").write_text(textwrap.dedent(FAKE_MODELS))
    (tmp_path / "diffusion").mkdir()
    (tmp_path / "diffusion" / "__init__.py").write_text(textwrap.dedent(FAKE_DIFFUSION))
    return tmp_path


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
