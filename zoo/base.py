"""The family contract every zoo file implements, and the helpers they share.

A family is one class: its `Config` dataclass (paper defaults, overridable from a protocol),
the networks, the optimisers and a `train_step` that reads like the paper. The runner only
talks to this interface, so one loop trains every family.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Optional

import torch
from torch import nn

from bench.data.base import DataSpec  # noqa: F401 (the data contract, re-exported for families)
from bench.errors import BenchError


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
            value = float(raw)
            if not math.isfinite(value):  # lr: .inf trained until a "non-finite loss" failure (exit 1, not 2)
                raise BenchError(f"{where}: expected a finite number, got {raw!r}")
            return value
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


@dataclass(frozen=True)
class Recipe:
    """The adversarial training knobs every two-player family shares (the GAN game of Goodfellow et al.
    2014 and the common stabilisation tricks: TTUR, label smoothing, clipping, GP, R1, instance noise).

    A family's `Config` inherits these and restates the defaults its paper uses. All of them are
    plain protocol config keys, checked like any other.
    """

    loss: Literal["minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"] = "nonsaturating"
    lr_G: float = 2e-4  # separate learning rates: TTUR (Heusel et al. 2017) is lr_D != lr_G
    lr_D: float = 2e-4
    optimizer: Literal["adam", "rmsprop"] = "adam"
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    n_d: int = 1  # D (critic) steps per G step
    fresh_batches: bool = True  # new real batch + noise per D step (WGAN Alg. 1); false = reuse (some course code)
    real_target: float = 1.0  # 0.9 = one-sided smoothing
    fake_target: float = 0.0  # 0.1 with real 0.9 = two-sided smoothing
    clip_weights: float = 0.0  # WGAN: clamp every D parameter to ±c after each D step (0 = off)
    gp_lambda: float = 0.0  # WGAN-GP gradient penalty weight (0 = off)
    r1_gamma: float = 0.0  # R1 penalty (γ/2)·E‖∇D(x_real)‖² (0 = off)
    instance_noise: float = 0.0  # σ of Gaussian noise added to every D input at step 0
    instance_noise_steps: int = 0  # σ falls linearly to 0 over this many steps (0 = constant σ)
    # zoo/stabilisers.py; each family declares which of these it supports (`TwoPlayerGAN.stabilisers`)
    spectral_norm: bool = False  # Miyato et al. 2018: every D weight / its largest singular value
    diffaug: str = ""  # DiffAugment (Zhao et al. 2020): comma list of color, translation, cutout on every D input
    replay_pool: int = 0  # experience replay: D's fakes through a pool of this many past fakes (half from history)
    init: Literal["family", "normal", "xavier", "orthogonal"] = "family"  # conv/linear weight init of G and D
    bcr_real: float = 0.0  # bCR (Zhao et al. 2021): λ of E‖D(x) − D(T(x))‖² on reals (the paper: 10)
    bcr_fake: float = 0.0  # and on fakes
    hist_avg: float = 0.0  # historical averaging (Salimans et al. 2016, §3.3): λ of ‖θ − θ̄‖² for each player
    # "joint": one D update on the real and the fake half; "real_then_fake": two updates per D step, first on
    # the real batch, then on the fake batch with the updated D (the course MNIST GAN's two Keras
    # `train_on_batch` calls; BCE losses only)
    d_step: Literal["joint", "real_then_fake"] = "joint"
    # The fakes G's step scores. "fresh": new noise, a second G forward (ganbench's recipe so far); "reuse": the
    # fakes D has just been trained on, now through the updated D, with the gradient flowing back through the same
    # G forward, as pytorch/examples dcgan/main.py and the DCGAN paper's code do: one G forward per step.
    g_fakes: Literal["fresh", "reuse"] = "fresh"

    def __post_init__(self):
        if self.lr_G <= 0 or self.lr_D <= 0 or self.n_d < 1 or self.weight_decay < 0:
            raise ValueError("lr_G and lr_D must be > 0, n_d >= 1, weight_decay >= 0")
        if not (0 <= self.real_target <= 1 and 0 <= self.fake_target <= 1):
            raise ValueError("real_target and fake_target must lie in [0, 1]")
        if min(self.clip_weights, self.gp_lambda, self.r1_gamma, self.instance_noise) < 0 or self.instance_noise_steps < 0:
            raise ValueError("clip_weights, gp_lambda, r1_gamma, instance_noise(_steps) must be >= 0")
        if self.loss in ("hinge", "wasserstein") and (self.real_target, self.fake_target) != (1.0, 0.0):
            raise ValueError(f"label smoothing (real_target/fake_target) has no meaning for the {self.loss} loss")
        from zoo.stabilisers import parse_policy

        parse_policy(self.diffaug)
        if min(self.replay_pool, self.bcr_real, self.bcr_fake, self.hist_avg) < 0:
            raise ValueError("replay_pool, bcr_real, bcr_fake and hist_avg must be >= 0")
        if self.d_step == "real_then_fake" and (self.loss not in ("minimax", "nonsaturating") or self.gp_lambda
                                                  or self.bcr_real or self.bcr_fake or self.hist_avg):
            raise ValueError("d_step real_then_fake is the course's two Keras BCE updates: it needs loss minimax or "
                             "nonsaturating and no gp_lambda, bcr or hist_avg")
        if self.spectral_norm and self.clip_weights:
            raise ValueError("spectral_norm and clip_weights both bound D's Lipschitz constant; choose one")


# Recipe keys added after protocols were first fingerprinted: they enter a fingerprint only when set away
# from their default (bench/protocol/load.py), so a new option left alone keeps every earlier fingerprint.
LATER_CONFIG_KEYS = frozenset({"spectral_norm", "diffaug", "replay_pool", "init", "upsample", "bcr_real", "bcr_fake",
                               "hist_avg", "minibatch_kernels", "d_step", "attention_res", "lr_per_resolution",
                               "phase_lr_floor", "layer_order", "fix_global_steps", "g_fakes",
                               "feat_num", "nef", "n_downsample_E", "n_clusters"})


def later_defaults(cfg: Any) -> dict[str, Any]:
    """The defaults of this config's later-added keys (LATER_CONFIG_KEYS)."""
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cfg) if f.name in LATER_CONFIG_KEYS}


def config_record(cfg: Any) -> dict[str, Any]:
    """A config as checkpoints and fingerprints record it: every value, except keys added later that are left
    at their defaults, so a new option changes no earlier checkpoint's bytes or protocol's fingerprint (and an
    earlier checkpoint, which lacks the key, reads as its default)."""
    record = dataclasses.asdict(cfg)
    for key, default in later_defaults(cfg).items():
        if record[key] == default:
            record.pop(key)
    return record


class _FullPrecision:
    """float32 throughout, no loss scaler: a model's arithmetic until the runner hands it a Precision
    (bench/runner/precision.py, whose "fp32" does exactly this; tests/test_runner.py compares the two)."""

    kind, scaler = "fp32", None

    def autocast(self):
        return contextlib.nullcontext()

    def off(self):
        return contextlib.nullcontext()

    def state_dict(self) -> dict:
        return {"kind": "fp32", "scaler": None}

    def load_state_dict(self, state: dict) -> None:
        pass


class Training:
    """What the runner decides for a training run and every family obeys in `update`: precision
    (autocast + scaler), gradient-norm clipping, the data-parallel world and how gradients are averaged
    over it. The runner (bench/runner/train.py) hands each run its own; without one a model trains in one
    process in float32, so the zoo never imports the runner."""

    def __init__(self, precision: Any = None, grad_clip: float = 0.0, world: Any = None,
                 average_gradients: Optional[Callable[[list], None]] = None):
        self.precision = precision if precision is not None else _FullPrecision()
        self.grad_clip = grad_clip
        self.world = world if world is not None else ALONE
        self.average_gradients = average_gradients or (lambda params: None)  # one process: nothing to average


# One process, rank 0 (the runner's data-parallel World has the same fields).
ALONE = types.SimpleNamespace(rank=0, size=1, local_rank=0, active=False, is_main=True)


class GANModel(abc.ABC):
    """One zoo family. Subclasses set the class attributes and implement the abstract methods.

    What a family can do beyond this contract is declared, never probed: it inherits `Translator`,
    `CycleTranslator`, `InstanceTranslator`, `FrameTranslator`, `StyleSampler` or `Classifier` below, lists the
    pretrained auxiliary networks it trains against in `requires()`, and writes family figures in `figures()`. The runner,
    checkpointing, preflight and the metrics ask those (isinstance, requires), so a new family touches only its
    own file.
    """

    family: ClassVar[str]
    task: ClassVar[str] = "unconditional"
    seed_section: ClassVar[str]
    summary: ClassVar[str]
    Config: ClassVar[type]
    labelled_per_class: ClassVar[int] = 0  # > 0: the runner also serves a labelled stream (semi-supervised)
    # Not None: the labelled subset is drawn from this seed instead of the entry's training seed, so every entry
    # with the same value (e.g. a semi-supervised GAN and its labels-only baseline) gets the same labels.
    labelled_seed: ClassVar[Optional[int]] = None
    # True: runs with this family train a semantic network S on the data's label maps (bench/features/
    # segmenter.py), so the leakage checks must keep the judge S apart from it. Known before building.
    uses_segmenter: ClassVar[bool] = False
    # Image channels of the data the family is usually described at: `bench zoo list` and docs/zoo.md count
    # parameters there (the progressive face models and the image-to-image families are RGB).
    default_channels: ClassVar[int] = 1

    def __init__(self, cfg: Any, data: DataSpec, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.data = data
        self.device = torch.device(device)
        # Training noise comes from this generator; the runner seeds it and checkpoints its state.
        self.noise_rng = torch.Generator()
        self.trainer = Training()
        self.ema = None  # an EMA of G, set by the runner when the protocol asks for one

    @classmethod
    def build(cls, overrides: Any, data: DataSpec, device: torch.device | str = "cpu",
              where: str = "config") -> "GANModel":
        """`overrides`: protocol/CLI keys (a dict, parsed and checked here) or an already resolved Config."""
        cfg = overrides if isinstance(overrides, cls.Config) else parse_config(cls.Config, overrides, where)
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
        """Every network by name (checkpointing, data parallelism and EMA iterate over this)."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name (checkpointed with the modules)."""

    @abc.abstractmethod
    def train_step(self, draw: "Draw", step: int) -> dict[str, float]:
        """One training iteration; `draw()` returns a fresh real batch in [-1, 1] on the model's device
        (call it again for a new batch). Returns the losses to log."""

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

    # -- declared extras (defaults: none) ---------------------------------------------------
    def requires(self) -> frozenset[str]:
        """Pretrained auxiliary networks this configured model trains against, which the runner resolves
        through the weights manifest and attaches before training: "vgg19" (`attach_vgg`), "segmenter"
        (`attach_segmenter`). Depends on the config (pix2pixHD without its VGG loss needs none)."""
        return frozenset()

    def figures(self, out_dir: Any, seed: int = 0) -> dict[str, Any]:
        """The family's own figures from the final weights (name -> written file); most families have none."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Training state besides modules and optimisers (image pools, growth phase) for the checkpoint."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{self.family} keeps no extra state, got keys {sorted(state)}")

    # -- shared behaviour ------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Latents drawn on the CPU from an explicit generator, so CPU and CUDA see the same noise."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def noise(self, n: int) -> torch.Tensor:
        """Training latents for this rank's n images: every rank draws the global batch and keeps its
        slice, so N ranks see the noise one process would (bench/runner/distributed.py)."""
        world = self.trainer.world
        z = self.sample_latent(n * world.size, self.noise_rng)
        return z[world.rank * n:(world.rank + 1) * n].to(self.device)

    def local_rand(self, n: int, *shape: int, normal: bool = False) -> torch.Tensor:
        """Uniform (or normal) training randomness for n images from the noise generator, rank-sliced."""
        world = self.trainer.world
        draw = torch.randn if normal else torch.rand
        x = draw(n * world.size, *shape, generator=self.noise_rng)
        return x[world.rank * n:(world.rank + 1) * n].to(self.device)

    def autocast(self):
        return self.trainer.precision.autocast()

    def update(self, name: str, loss: torch.Tensor) -> None:
        """zero_grad -> backward -> average gradients over ranks -> clip -> step, for optimiser `name`."""
        opt = self.optimizers()[name]
        prec, t = self.trainer.precision, self.trainer
        opt.zero_grad(set_to_none=True)
        with prec.off():
            (prec.scaler.scale(loss) if prec.scaler else loss).backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        t.average_gradients(params)
        if t.grad_clip:
            if prec.scaler:
                prec.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        if prec.scaler:
            prec.scaler.step(opt)
            prec.scaler.update()
        else:
            opt.step()

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    def sampling_net(self, name: str = "G") -> nn.Module:
        """The network sampling uses: the EMA copy when the run keeps one, else the live one."""
        return self.ema.shadow if self.ema is not None and name == "G" else self.modules()[name]

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


class Translator(abc.ABC):
    """An image-to-image model: `translate(x)` maps inputs in [-1, 1] to outputs in [-1, 1]. `task` is "paired"
    (scored against targets: SSIM, PSNR, LPIPS) or "unpaired". `sample_seeds` (one per row) seed any test-time
    noise per image, so an output never depends on the batch it was translated in (zoo/translation.py)."""

    task: ClassVar[str]

    @abc.abstractmethod
    def translate(self, x: torch.Tensor, sample_seeds: Optional[typing.Sequence[int]] = None) -> torch.Tensor: ...


class CycleTranslator(Translator):
    """An unpaired translator with the inverse map F: B -> A as well, for cycle and identity errors."""

    @abc.abstractmethod
    def translate_back(self, b: torch.Tensor, sample_seeds: Optional[typing.Sequence[int]] = None) -> torch.Tensor: ...


class InstanceTranslator(Translator):
    """A label-map translator whose generator can also read which pixels form each object instance: pix2pixHD's
    instance-wise feature encoder (Wang et al. 2018, §3.4). Whether this configured model does is
    `reads_instances()` (pix2pixHD: feat_num > 0). When it does, the harness hands it the instance ids
    (int64 (B, H, W), one id per pixel, unique per image; bench/data/labelmap.py) of everything it translates:

    - training: the family pulls (input, target, instance ids) with `draw.with_instances()`, flipped together;
    - after the last training step, before the final checkpoint: `fit_instance_features(batches)` once, with
      (input, target, instance ids) batches of the whole training part, from which it fixes what it samples at
      test time (pix2pixHD: k-means centres of the instance features per class), as model state;
    - evaluation, grids and figures: `translate(x, sample_seeds, instances=ids)`; `sample_seeds[i]` seeds
      image i's test-time draw, so different evaluation seeds give different, reproducible outputs;
    - `attach_figure_input(x, instances)`: one held-out input for its figures (`figures()`).
    """

    @abc.abstractmethod
    def reads_instances(self) -> bool: ...

    @abc.abstractmethod
    def translate(self, x: torch.Tensor, sample_seeds: Optional[typing.Sequence[int]] = None,
                  instances: Optional[torch.Tensor] = None) -> torch.Tensor: ...

    @abc.abstractmethod
    def fit_instance_features(self, batches: typing.Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                              ) -> None: ...

    @abc.abstractmethod
    def attach_figure_input(self, x: torch.Tensor, instances: torch.Tensor) -> None: ...


def reads_instances(model: Any) -> bool:
    """Whether this model wants the inputs' instance ids (an InstanceTranslator configured to read them)."""
    return isinstance(model, InstanceTranslator) and model.reads_instances()


class FrameTranslator(Translator):
    """A translator that trains on and translates whole non-square frames: label maps read with `dataset.aspect`
    > 1 (bench/data/labelmap.py), height = resolution, width = aspect x resolution (cityscapes at aspect 2:
    1024x512 as pix2pixHD trains it). The family declares it on its class, because every network it builds must
    be fully convolutional along both sides and every downsampling must divide both; `bench validate` refuses
    dataset.aspect != 1 for any family that does not (bench/protocol/load.py `check_frames`). The harness then
    hands it, and asks it for, (B, C, H, W) batches of the data's frame (`frame`), never squares."""

    data: Any
    resolution: int

    @property
    def frame(self) -> tuple[int, int]:
        """(height, width) this model trains and translates at: the data's frame, its height the resolution."""
        return self.resolution, self.data.aspect * self.resolution


def frame_of(model: Any) -> tuple[int, int]:
    """(height, width) of what a model generates or translates: its FrameTranslator frame, else resolution^2."""
    return model.frame if isinstance(model, FrameTranslator) else (model.resolution, model.resolution)


class StyleSampler(abc.ABC):
    """A style-based generator (Karras et al. 2019): z -> w by `mapping`, w -> image by `synthesize`, with
    truncation ψ towards the tracked average w. Enables PPL in w and the truncation curve."""

    @abc.abstractmethod
    def mapping(self, z: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def synthesize(self, ws: torch.Tensor, noise: Any = None, psi: float = 1.0, **kwargs: Any) -> torch.Tensor: ...


class Classifier(abc.ABC):
    """A discriminator that is also a K-class classifier (semi-supervised GAN, Salimans et al. 2016 §5):
    `classify(images)` gives class logits for held-out labelled images (classifier_accuracy)."""

    @abc.abstractmethod
    def classify(self, images: torch.Tensor) -> torch.Tensor: ...


class ExternalWeights(abc.ABC):
    """A family whose weights come from a file in a format of its own (zoo/external.py: a TorchScript
    generator, or a plain state dict with the class that builds it), not from a ganbench checkpoint. It is
    scored, never trained: `load_weights(path)` reads the file without unpickling code and checks the network
    against the config, one line if it does not fit."""

    @abc.abstractmethod
    def load_weights(self, path: Any) -> None: ...


class WarmStart(abc.ABC):
    """A family that can start training from another entry's final weights (`train.init_from`): pix2pixHD's
    local enhancer from a trained global generator, as the paper trains them in stages. `warm_start` copies
    what fits from a checkpoint payload of the named entry and returns a one-line account of what it took;
    it raises ValueError when nothing sensible fits."""

    @abc.abstractmethod
    def warm_start(self, payload: dict[str, Any], source: str) -> str: ...


def task_of(model: Any) -> str:
    """"unconditional", "paired" or "unpaired": what a model (or a reference row standing in for one) does."""
    return model.task if isinstance(model, Translator) else "unconditional"


class Draw(typing.Protocol):
    def __call__(self) -> torch.Tensor: ...


def make_optimizer(params, cfg: Any, lr: float) -> torch.optim.Optimizer:
    """The one optimiser builder of the zoo. A shared-recipe config chooses Adam or RMSProp and a weight
    decay; an image-to-image config has only Adam's betas (its papers' optimiser), so those default here."""
    kind, decay = getattr(cfg, "optimizer", "adam"), getattr(cfg, "weight_decay", 0.0)
    if kind == "rmsprop":  # WGAN (Arjovsky et al.): momentum-free RMSProp
        return torch.optim.RMSprop(params, lr=lr, weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=decay)


class TwoPlayerGAN(GANModel):
    """One generator `G`, one discriminator `D` and the shared adversarial loop (Goodfellow et al. 2014, Alg. 1).

    Each iteration: `n_d` D steps (a fresh real batch and fresh noise each, unless `fresh_batches` is
    off), each followed by weight clipping when set, then one G step with D frozen. The D loss is the
    recipe's loss on separate real and fake passes (BatchNorm sees each half on its own, as the course
    MNIST GAN's two Keras `train_on_batch` calls), plus the gradient penalty and R1 when set; instance
    noise is added to every D input. Subclasses build `G` and `D` and call `build_optimizers()`.
    """

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    # The recipe's stabilisers (zoo/stabilisers.py) this family supports: those that act in this class's
    # backward_D/backward_G need a family that trains through them, and spectral norm and the init choices
    # need plain conv/linear layers. A family restates this when it differs; a stabiliser it does not list is
    # refused when the model is built.
    # `reuse_fakes` (g_fakes: reuse) acts in this class's train_step: a family with its own step restates the set.
    stabilisers: ClassVar[frozenset[str]] = frozenset({"spectral_norm", "diffaug", "replay_pool", "init", "bcr",
                                                       "hist_avg", "reuse_fakes"})
    replay = None  # the experience-replay pool, made on first use (seeded from the noise generator)
    history: dict = {}  # historical averages per player, when hist_avg is on

    def build_optimizers(self) -> None:
        from zoo.stabilisers import apply_spectral_norm, reinit

        cfg = self.cfg
        chosen = {"spectral_norm": cfg.spectral_norm, "diffaug": bool(cfg.diffaug),
                  "replay_pool": bool(cfg.replay_pool), "init": cfg.init != "family",
                  "bcr": bool(cfg.bcr_real or cfg.bcr_fake), "hist_avg": bool(cfg.hist_avg),
                  "reuse_fakes": cfg.g_fakes == "reuse"}
        for key, on in chosen.items():
            if on and key not in self.stabilisers:
                raise ValueError(f"{key} is not available for {self.family} (supported: "
                                 f"{', '.join(sorted(self.stabilisers)) or 'none'})")
        reinit(self.G, cfg.init)
        reinit(self.D, cfg.init)
        if cfg.spectral_norm:
            apply_spectral_norm(self.D)  # before the optimiser: the parametrisation owns the weights
        self.opt_G = make_optimizer(self.G.parameters(), self.cfg, self.cfg.lr_G)
        self.opt_D = make_optimizer(self.D.parameters(), self.cfg, self.cfg.lr_D)
        if cfg.hist_avg:
            from zoo.stabilisers import HistoricalAverage

            self.history = {"G": HistoricalAverage(self.G), "D": HistoricalAverage(self.D)}

    def with_history(self, name: str, loss: torch.Tensor, logs: dict[str, float]) -> torch.Tensor:
        """Historical averaging's λ‖θ − θ̄‖² on player `name`'s loss (when chosen)."""
        if not self.history:
            return loss
        penalty = self.history[name].penalty()
        logs[f"{name}/hist"] = float(penalty)
        return loss + self.cfg.hist_avg * penalty

    def d_input(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """What D sees of a batch: DiffAugment (when chosen), then instance noise."""
        if self.cfg.diffaug:
            from zoo.stabilisers import diffaugment, parse_policy

            x = diffaugment(x, parse_policy(self.cfg.diffaug), self.local_rand)
        return self.with_instance_noise(x, step)

    def replayed(self, fake: torch.Tensor) -> torch.Tensor:
        """The fakes D trains on: through the experience-replay pool when chosen (zoo/image_pool.py)."""
        if not self.cfg.replay_pool:
            return fake
        if self.replay is None:
            from zoo.image_pool import ImagePool

            seed = int(torch.randint(2**62, (), generator=self.noise_rng))
            self.replay = ImagePool(self.cfg.replay_pool, 0.5, torch.Generator().manual_seed(seed))
        return self.replay.query(fake)

    def extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"replay": self.replay.state_dict()} if self.replay is not None else {}
        if self.history:
            out["history"] = {k: h.state_dict() for k, h in self.history.items()}
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state or {})
        replay, history = state.pop("replay", None), state.pop("history", None)
        super().load_extra_state(state)
        if replay is not None:
            from zoo.image_pool import ImagePool

            self.replay = ImagePool(self.cfg.replay_pool, 0.5)
            self.replay.load_state_dict(replay)
        for name, h in (history or {}).items():
            self.history[name].load_state_dict(h)

    def modules(self):
        return {"G": self.G, "D": self.D}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    def noise_sigma(self, step: int) -> float:
        cfg = self.cfg
        if not cfg.instance_noise:
            return 0.0
        if not cfg.instance_noise_steps:
            return cfg.instance_noise
        return cfg.instance_noise * max(0.0, 1.0 - step / cfg.instance_noise_steps)

    def with_instance_noise(self, x: torch.Tensor, step: int) -> torch.Tensor:
        sigma = self.noise_sigma(step)
        if not sigma:
            return x
        return x + sigma * self.local_rand(x.shape[0], *x.shape[1:], normal=True)

    def adjust_d_loss(self, loss: torch.Tensor, real_out: torch.Tensor, fake_out: torch.Tensor,
                      logs: dict[str, float]) -> torch.Tensor:
        """A family's own terms on top of the recipe's D loss (ProGAN's drift); penalties come after."""
        return loss

    def generator_fakes(self, n: int) -> torch.Tensor:
        """The fakes the G step scores (a growing family blends its fade here)."""
        return self.G(self.noise(n))

    def backward_D(self, real: torch.Tensor, fake: torch.Tensor, step: int) -> dict[str, float]:
        from zoo import losses

        cfg = self.cfg
        real_in, fake_in = self.d_input(real, step), self.d_input(self.replayed(fake), step)
        if cfg.d_step == "real_then_fake":
            return self.backward_D_real_then_fake(real_in, fake_in)
        with self.autocast():
            real_out, fake_out = self.D(real_in).float(), self.D(fake_in).float()
        logs: dict[str, float] = {}
        loss = self.adjust_d_loss(losses.d_loss(cfg.loss, real_out, fake_out, cfg.real_target, cfg.fake_target),
                                  real_out, fake_out, logs)
        logs["D"] = loss.item()
        if cfg.loss in ("minimax", "nonsaturating"):
            logs["D/real"] = losses.bce_to_target(real_out, cfg.real_target).item()
            logs["D/fake"] = losses.bce_to_target(fake_out, cfg.fake_target).item()
        else:
            logs["D/real"], logs["D/fake"] = real_out.mean().item(), fake_out.mean().item()
        with self.trainer.precision.off():
            if cfg.gp_lambda:
                alpha = self.local_rand(real.shape[0], *([1] * (real.dim() - 1)))
                gp = losses.gradient_penalty(self.D, real_in.float(), fake_in.float(), alpha)
                loss = loss + cfg.gp_lambda * gp
                logs["D/gp"] = gp.item()
            if cfg.r1_gamma:
                r1 = losses.r1_penalty(self.D, real_in.float(), cfg.r1_gamma)
                loss = loss + r1
                logs["D/r1"] = r1.item()
        if cfg.bcr_real or cfg.bcr_fake:
            from zoo.stabilisers import consistency_penalty

            with self.autocast():
                for lam, x, out, side in ((cfg.bcr_real, real_in, real_out, "real"), (cfg.bcr_fake, fake_in, fake_out, "fake")):
                    if lam:
                        term = consistency_penalty(self.D, x, out, self.local_rand)
                        loss = loss + lam * term
                        logs[f"D/bcr_{side}"] = term.item()
        loss = self.with_history("D", loss, logs)
        self.update("D", loss)
        if self.history:
            self.history["D"].record()
        if cfg.clip_weights:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-cfg.clip_weights, cfg.clip_weights)
        return logs

    def backward_D_real_then_fake(self, real_in: torch.Tensor, fake_in: torch.Tensor) -> dict[str, float]:
        """Two D updates, as two Keras `train_on_batch` calls: the real batch, then the fake batch through the
        updated D. Logged D loss is their mean, as the course code prints it."""
        from zoo import losses

        cfg, logs = self.cfg, {}
        for side, x, target in (("real", real_in, cfg.real_target), ("fake", fake_in, cfg.fake_target)):
            with self.autocast():
                loss = losses.bce_to_target(self.D(x).float(), target)
            logs[f"D/{side}"] = loss.item()
            if side == "real" and cfg.r1_gamma:
                with self.trainer.precision.off():
                    r1 = losses.r1_penalty(self.D, x.float(), cfg.r1_gamma)
                loss = loss + r1
                logs["D/r1"] = r1.item()
            self.update("D", loss)
            if cfg.clip_weights:
                with torch.no_grad():
                    for p in self.D.parameters():
                        p.clamp_(-cfg.clip_weights, cfg.clip_weights)
        logs["D"] = 0.5 * (logs["D/real"] + logs["D/fake"])
        return logs

    def backward_G(self, batch_size: int, step: int, fake: torch.Tensor | None = None) -> dict[str, float]:
        """G's update on fresh fakes, or on `fake` (g_fakes: reuse: D's fakes, still attached to G's graph)."""
        from zoo import losses

        self.D.requires_grad_(False)  # D frozen in the G step, as the course's Keras combined model
        with self.autocast():
            fake = self.d_input(self.generator_fakes(batch_size) if fake is None else fake, step)
            out = self.D(fake).float()
        loss = losses.G_LOSSES[self.cfg.loss](out)
        logs = {"G": loss.item()}
        self.update("G", self.with_history("G", loss, logs))
        if self.history:
            self.history["G"].record()
        self.D.requires_grad_(True)
        return logs

    def train_step(self, draw, step):
        self.train(True)
        logs: dict[str, float] = {}
        real = fake = None
        reuse = self.cfg.g_fakes == "reuse"
        for i in range(self.cfg.n_d):
            if real is None or self.cfg.fresh_batches:
                real = draw()
                # Only fakes that G's step will score keep G's graph (the last D step's, or the only ones).
                keep = reuse and (i == self.cfg.n_d - 1 or not self.cfg.fresh_batches)
                with torch.set_grad_enabled(keep), self.autocast():
                    fake = self.G(self.noise(real.shape[0])).float()
            logs = self.backward_D(real, fake.detach(), step)
        return {**logs, **self.backward_G(real.shape[0], step, fake if reuse else None)}

    @torch.no_grad()
    def generate(self, z):
        G = self.sampling_net("G")
        G.eval()
        return G(z.to(self.device)).float()
