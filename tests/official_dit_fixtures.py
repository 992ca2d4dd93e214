"""A stand-in checkout of the official DiT with the entry points benchmarks/official_dit.py
uses: `models.DiT_models` and `diffusion.create_diffusion`, on a tiny torch model."""

import pathlib
import textwrap

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


DiT_models = {"DiT-S/2": TinyDiT, "DiT-S/8": TinyDiT}
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


def write_fake_checkout(folder: pathlib.Path) -> pathlib.Path:
    """Writes the stand-in's models.py and diffusion/ into `folder` and returns it."""
    (folder / "models.py").write_text(textwrap.dedent(FAKE_MODELS))
    (folder / "diffusion").mkdir()
    (folder / "diffusion" / "__init__.py").write_text(textwrap.dedent(FAKE_DIFFUSION))
    return folder
