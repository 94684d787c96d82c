"""A generator you bring: score a trained network that is not a zoo family, without writing one.

Two formats, for scoring only (nothing trains):
- `torchscript`: a file written by `torch.jit.save(torch.jit.script(G) or torch.jit.trace(G, z), path)`. It is
  loaded with `torch.jit.load`, which reads TorchScript's own restricted format and never unpickles Python
  objects; the network's TorchScript code then runs when ganbench samples from it, as any generator you
  score does.
- `state_dict`: `torch.save(G.state_dict(), path)` plus the class that builds G, named `module: pkg.mod:Class`
  with constructor `kwargs`. The file is read with weights_only=True (tensors only, nothing executed);
  importing your module runs your code, as any Python import does, so name only code you trust.

A protocol entry gives it as a mapping under `checkpoint:` (bench/protocol/schema.py turns that into this
family and its config):

    - name: mine
      checkpoint: {path: generator.pt, format: torchscript, latent_dim: 100, resolution: 64, latent_4d: true}

G maps latents z ~ N(0, I) of shape (B, latent_dim), or (B, latent_dim, 1, 1) with `latent_4d` (the
pytorch/examples DCGAN layout), to images (B, C, resolution, resolution) in [-1, 1] (`output_range: "-1,1"`,
tanh outputs) or [0, 1] (`"0,1"`, sigmoid outputs), with C the data's channels. One forward on two latents
checks all of that before anything runs. The file's sha256, not its path, enters the protocol fingerprint,
and so does this config (latent layout and output range change the images scored).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bench.errors import BenchError, one_line
from zoo.base import ExternalWeights, GANModel


@dataclass
class Config:
    latent_dim: int = 128
    resolution: int = 64  # the side length G generates (the evaluation brings it to the data's, as for any family)
    format: Literal["torchscript", "state_dict"] = "torchscript"
    module: str = ""  # state_dict: the class that builds G, "package.module:Class"
    kwargs: dict[str, Any] = field(default_factory=dict)  # state_dict: constructor arguments of that class
    latent_4d: bool = False  # G takes (B, latent_dim, 1, 1) instead of (B, latent_dim)
    output_range: Literal["-1,1", "0,1"] = "-1,1"

    def __post_init__(self):
        if self.latent_dim <= 0 or self.resolution <= 0:
            raise ValueError("latent_dim and resolution must be positive")
        if self.format == "state_dict" and ":" not in self.module:
            raise ValueError("format state_dict needs module: 'package.module:Class' (the class that builds G)")
        if self.format == "torchscript" and (self.module or self.kwargs):
            raise ValueError("module and kwargs are for format state_dict; a TorchScript file holds its own G")


class External(GANModel, ExternalWeights):
    family = "external"
    seed_section = "your own generator (TorchScript or state dict), scored like any entry"
    summary = "a trained generator from outside the zoo; scoring only, weights from its checkpoint file"
    Config = Config
    default_channels = 3

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        self.G: nn.Module | None = None  # set by load_weights

    # -- the contract ---------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {} if self.G is None else {"G": self.G}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}  # nothing to train: preflight refuses `train:` for this family

    def train_step(self, draw, step):
        raise BenchError("an external generator is scored, not trained")

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if self.G is None:
            raise BenchError("external generator: no weights loaded (give the entry a checkpoint)")
        z = z.to(self.device)
        z = z.view(len(z), -1, 1, 1) if self.cfg.latent_4d else z
        try:
            x = self.G(z)
        except RuntimeError as exc:  # a latent layout or size the network does not take
            first = str(exc).strip().splitlines()[-1][:200]
            raise BenchError(f"external generator failed on latents of shape {tuple(z.shape)} ({first}); "
                             "check latent_dim and latent_4d") from None
        if not isinstance(x, torch.Tensor):
            raise BenchError(f"external generator returned {type(x).__name__}, not an image tensor")
        expected = (len(z), self.data.channels, self.cfg.resolution, self.cfg.resolution)
        if tuple(x.shape) != expected:
            raise BenchError(f"external generator made images of shape {tuple(x.shape)}, expected {expected} "
                             "(batch, the data's channels, resolution, resolution); check resolution and latent_4d")
        return x * 2 - 1 if self.cfg.output_range == "0,1" else x

    # -- ExternalWeights ------------------------------------------------------------------
    def load_weights(self, path: Path) -> None:
        net = _torchscript(path) if self.cfg.format == "torchscript" else _state_dict(path, self.cfg)
        self.G = net.to(self.device).eval()
        if self.device.type != "meta":
            self.generate(torch.zeros(2, self.cfg.latent_dim))  # shape check now, one line if it is wrong


def _torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # not a TorchScript archive (e.g. a pickled module or a state dict)
        raise BenchError(f"{path}: not a TorchScript file ({type(exc).__name__}); save G with "
                         "torch.jit.save(torch.jit.script(G), path), or use format: state_dict") from None


def _state_dict(path: Path, cfg: Config) -> nn.Module:
    from bench.io import RefusedGlobal, safe_torch_load

    try:
        state = safe_torch_load(path)
    except RefusedGlobal as exc:
        raise BenchError(f"{path}: refused to load: it needs {exc.name}; a state dict holds tensors only "
                         "(loading it could run code)") from None
    except Exception as exc:
        raise BenchError(f"{path}: not a state dict readable with weights_only=True ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"{path}: not a state dict (a mapping of names to tensors); save G.state_dict()")
    module_name, _, attr = cfg.module.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BenchError(f"module '{cfg.module}': cannot import it ({type(exc).__name__}: {one_line(exc, 300)})") from None
    try:
        net = cls(**cfg.kwargs)
    except Exception as exc:
        raise BenchError(f"module '{cfg.module}': cannot build it with kwargs {one_line(cfg.kwargs, 300)} "
                         f"({type(exc).__name__}: {one_line(exc, 300)})") from None
    if not isinstance(net, nn.Module):
        raise BenchError(f"module '{cfg.module}' built a {type(net).__name__}, not a torch.nn.Module")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise BenchError(f"{path}: does not fit {cfg.module} ({first})") from None
    return net
