"""The family contract every zoo file implements, and the helpers they share.

A family is one class: its `Config` dataclass (paper defaults, overridable from a protocol),
the networks, the optimisers and a `train_step` that reads like the paper. The runner only
talks to this interface, so one loop trains every family.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.errors import BenchError


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about the data it will be trained on."""

    name: str
    resolution: int
    channels: int
    num_classes: int = 0


def parse_config(config_cls: type, overrides: dict[str, Any] | None, where: str) -> Any:
    """Build a config dataclass from protocol/CLI overrides; unknown keys are errors listing valid ones."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise BenchError(f"{where}: unknown config key '{unknown[0]}'; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(config_cls)
    values = {}
    for key, raw in overrides.items():
        values[key] = _coerce(raw, hints[key], f"{where}.{key}")
    try:
        cfg = config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: {exc}") from None
    return cfg


def _coerce(raw: Any, typ: Any, where: str) -> Any:
    """Accept YAML values and `key=value` strings from the command line, checking the declared type."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        value = raw
        if isinstance(raw, str) and not isinstance(choices[0], str):
            value = _coerce(raw, type(choices[0]), where)
        if value not in choices:
            raise BenchError(f"{where}: {raw!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        if isinstance(raw, str):
            raw = [p for p in raw.replace("(", "").replace(")", "").split(",") if p.strip()]
        args = typing.get_args(typ)
        inner = args[0] if args else float
        return tuple(_coerce(v, inner, where) for v in raw)
    try:
        if typ is bool:
            if isinstance(raw, str):
                if raw.lower() in ("1", "true", "yes", "on"):
                    return True
                if raw.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(raw)
            if not isinstance(raw, bool):
                raise ValueError(raw)
            return raw
        if typ is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if typ is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if typ is str:
            return str(raw)
    except (TypeError, ValueError):
        raise BenchError(f"{where}: expected {typ.__name__}, got {raw!r}") from None
    return raw


def count_params(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def buffer_count(module: nn.Module) -> int:
    """Non-trainable statistics (BatchNorm running mean/var), as Keras reports them."""
    return sum(b.numel() for name, b in module.named_buffers() if not name.endswith("num_batches_tracked"))


def trace_shapes(module: nn.Module, *inputs: torch.Tensor) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(path, layer type, output shape without batch, own parameters) for every leaf layer."""
    rows: list[tuple[str, str, tuple[int, ...], int]] = []
    hooks = []
    for path, sub in module.named_modules():
        if len(list(sub.children())) == 0:
            def hook(mod, _inp, out, path=path):
                shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
                own = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append((path, type(mod).__name__, shape, own))
            hooks.append(sub.register_forward_hook(hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return rows


class GANModel(abc.ABC):
    """One zoo family. Subclasses set the class attributes and implement the abstract methods."""

    family: ClassVar[str]
    task: ClassVar[str] = "unconditional"
    seed_section: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, cfg: Any, data: DataSpec, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.data = data
        self.device = torch.device(device)
        # Training noise comes from this generator; the runner seeds it and checkpoints its state.
        self.noise_rng = torch.Generator()

    @classmethod
    def build(cls, overrides: dict[str, Any] | None, data: DataSpec, device: torch.device | str = "cpu",
              where: str = "config") -> "GANModel":
        cfg = parse_config(cls.Config, overrides, where)
        try:
            model = cls(cfg, data, device)
        except (ValueError, RuntimeError) as exc:  # a config that cannot be built for this data
            raise BenchError(f"{where}: {exc}") from None
        for m in model.modules().values():
            m.to(model.device)
        return model

    # -- what the runner calls -------------------------------------------------------------
    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every network by name (checkpointing, DDP and EMA iterate over this)."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name (checkpointed with the modules)."""

    @abc.abstractmethod
    def train_step(self, real: torch.Tensor, step: int) -> dict[str, float]:
        """One training iteration on a batch of real images in [-1, 1]; returns losses to log."""

    @property
    @abc.abstractmethod
    def latent_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def resolution(self) -> int:
        """The side length this family generates (the runner resizes real data to it)."""

    @abc.abstractmethod
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], shape (B, C, R, R), from latents; networks in eval mode."""

    # -- shared behaviour ------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Latents drawn on the CPU from an explicit generator, so CPU and CUDA see the same noise."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def noise(self, n: int) -> torch.Tensor:
        return self.sample_latent(n, self.noise_rng).to(self.device)

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def card(self) -> dict[str, Any]:
        """Model card: what this entry is, where it comes from, and how big it is."""
        return {
            "family": self.family,
            "task": self.task,
            "seed_section": self.seed_section,
            "summary": self.summary,
            "config": dataclasses.asdict(self.cfg),
            "params": {name: count_params(m) for name, m in self.modules().items()},
        }

    def inspect(self) -> dict[str, list[tuple[str, str, tuple[int, ...], int]]]:
        """Layer-by-layer output shapes of each network for a batch of one."""
        raise NotImplementedError


class TwoPlayerGAN(GANModel):
    """One generator `G`, one discriminator `D`, one Adam each, alternating D then G steps.

    Subclasses build `G`, `D`, `opt_G`, `opt_D` and write `backward_D`; the generator step is the
    non-saturating loss with D frozen, as in every two-player family of the seeds.
    """

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    @abc.abstractmethod
    def backward_D(self, real: torch.Tensor) -> dict[str, float]: ...

    def backward_G(self, batch_size: int) -> dict[str, float]:
        from zoo import losses

        self.D.requires_grad_(False)  # D frozen in the G step, as the seed's combined model
        loss = losses.g_loss_nonsaturating(self.D(self.G(self.noise(batch_size))))
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        return {"G": loss.item()}

    def train_step(self, real, step):
        self.train(True)
        return {**self.backward_D(real), **self.backward_G(real.shape[0])}

    @torch.no_grad()
    def generate(self, z):
        self.G.eval()
        return self.G(z.to(self.device))
