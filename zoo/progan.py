"""ProGAN (Karras et al. 2018, "Progressive Growing of GANs for Improved Quality, Stability, and Variation",
ICLR; official code tkarras/progressive_growing_of_gans), and the growth machinery StyleGAN reuses.

G: z (512, PixelNorm-ed) -> dense to 4×4×C (+ bias, LeakyReLU 0.2, PixelNorm) -> 3×3 conv; then per stage
   2× nearest upsample + two 3×3 convs, each followed by LeakyReLU 0.2 and PixelNorm (ε = 1e-8); a 1×1 toRGB
   per stage (linear output, gain 1).
D: the mirror: a 1×1 fromRGB (+ LeakyReLU) per stage; per stage two 3×3 convs (LeakyReLU) and a 2×2 average
   pool; at 4×4 minibatch stddev (group 4, one extra channel), a 3×3 conv, dense C·16 -> C, dense -> 1.
Widths min(fmap_base / 2^stage, fmap_max) with stage = log2(res) − 1 (8192/512: 512 up to 32 px, then
256/128/64/32/16). Every conv and dense layer has an equalised learning rate (§4.1) with gain √2 (`gain`;
a common course version says c = 1.0, which is not the papers' constant); the first dense layer uses gain/4
and toRGB / the last dense layer gain 1, as the official code. Loss WGAN-GP (λ = 10) plus the drift term
0.001·E[D(x)²]; Adam 1e-3, betas (0, 0.99), one critic step per G step (the paper's appendix A.1); the
Adam moments are cleared at every fade start and fade end (`reset_optimizer`, the official
`reset_opt_for_new_lod`).

Growth (§2, Fig. 2): training starts at `start_resolution` (4 px in the paper; 8 also works) and doubles
up to `resolution`. A new block fades in over `fade_steps` (α from 0 to 1 linearly) and then stabilises
for `stable_steps`; the paper counts images (800k fade + 800k stable per resolution), this zoo counts
training steps so that CPU protocols can size them. During a fade G outputs
(1 − α)·upsample(toRGB_old(x)) + α·toRGB_new(block(x)), D sees
(1 − α)·fromRGB_old(avgpool(img)) + α·block(fromRGB_new(img)) (the old path goes through the old fromRGB,
as in the paper's Fig. 2; descriptions that blend the pooled RGB image straight into feature maps omit
it), and the real images are blended the same way, (1 − α)·upsample(avgpool(x)) + α·x, as in the paper.
`resolution` is the current stage's size, so the runner feeds reals at that size; `generate` upsamples
(nearest) to the configured final size so evaluation always sees the protocol's size.

The current stage and α live in G's and D's buffers (`stage`, `alpha`): they travel with the state dict,
the EMA copy and a checkpoint loaded for scoring only; `extra_state()` holds the schedule position (steps
and images seen) and mirrors the phase, and `load_extra_state` checks the two agree.

Parameter count at 1024 px, 3 channels, paper widths (the official networks.py G_paper / D_paper):
  G = 23,079,115: dense 512·8192 + 512 bias; 4×4 conv 2,359,808; three 512-wide stages of two 512→512 convs
      (4,719,616 each); 64 px 1,769,984; 128 px 442,624; 256 px 110,720; 512 px 27,712; 1024 px 6,944; and
      the nine toRGB layers the growing network keeps (7,659: 4×1,539 + 771 + 387 + 195 + 99 + 51). Without
      the eight toRGBs only used while growing it is 23,071,507. The paper's Table 2 rounds to 23.1M.
  D = 23,087,249: nine fromRGB (10,176), the stages' convs (16,517,328) and the 4×4 block (6,559,745:
      conv 513→512, dense 8192→512, dense 512→1), also 23.1M in Table 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from zoo.base import Recipe, TwoPlayerGAN, trace_shapes
from zoo.style_layers import (LRELU, SQRT2, Blur, EqualConv2d, EqualLinear, GrowthSchedule, LatentTo4x4,
                              MinibatchStdDev, Phase, PixelNorm, blend, downsample2x, grown, upsample2x,
                              upsample_to, width)

LossKind = Literal["minimax", "nonsaturating", "lsgan", "hinge", "wasserstein"]


def stage_of(res: int) -> int:
    """0 for 4 px, 1 for 8 px, ..."""
    return int(math.log2(res)) - 2


def _power_of_two(x: int) -> bool:
    return x >= 4 and x & (x - 1) == 0


@dataclass(frozen=True)
class ProgressiveConfig(Recipe):
    """Keys every progressive family shares, on top of the shared adversarial recipe."""

    resolution: int = 1024  # final side length (a power of two, 4 ... 1024)
    start_resolution: int = 4  # 4 in the paper; 8 is also common
    # Growth in training steps (the paper: 800k real images of fade + 800k of stabilisation per resolution).
    fade_steps: int = 1000
    stable_steps: int = 1000
    latent_dim: int = 512
    fmap_base: int = 8192  # channels min(fmap_base / 2^stage, fmap_max), stage = log2(res) − 1
    fmap_max: int = 512
    gain: float = SQRT2  # equalised-LR gain of LeakyReLU layers: √2 (He, the papers); 1.0 = a course version's c
    mbstd_group: int = 4  # minibatch-stddev group size (1 = no stddev channel)
    drift: float = 0.0  # ε_drift·E[D(x)²] added to the D loss (ProGAN: 0.001)
    reset_optimizer: bool = True  # clear the Adam moments when a fade starts or ends (official code)
    # Learning rate of G and D by the resolution being trained (or faded in), as the official `G_lrate_dict` /
    # `D_lrate_dict` (NVlabs/stylegan train.py: {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}); resolutions
    # not listed use lr_G / lr_D. Empty: one rate throughout.
    lr_per_resolution: dict = field(default_factory=dict)
    # < 1: within each resolution's steps (its fade and stabilisation), the rate stays constant for the first
    # half, then falls linearly to this fraction of it (the course's 1024 px recipe: 0.5). 1 = off.
    phase_lr_floor: float = 1.0
    # Both papers' optimiser: Adam 1e-3 with betas (0, 0.99) for G and D.
    lr_G: float = 1e-3
    lr_D: float = 1e-3
    beta1: float = 0.0
    beta2: float = 0.99

    def __post_init__(self):
        super().__post_init__()
        if not _power_of_two(self.resolution) or self.resolution > 1024:
            raise ValueError(f"resolution must be a power of two from 4 to 1024, got {self.resolution}")
        if not _power_of_two(self.start_resolution) or self.start_resolution > self.resolution:
            raise ValueError(f"start_resolution must be a power of two from 4 to resolution ({self.resolution}), "
                             f"got {self.start_resolution}")
        if self.fade_steps < 0 or self.stable_steps < 0:
            raise ValueError("fade_steps and stable_steps must be >= 0")
        if min(self.latent_dim, self.fmap_base, self.fmap_max, self.mbstd_group) < 1:
            raise ValueError("latent_dim, fmap_base, fmap_max and mbstd_group must be >= 1")
        if self.gain <= 0 or self.drift < 0:
            raise ValueError("gain must be > 0 and drift >= 0")
        if not 0 < self.phase_lr_floor <= 1:
            raise ValueError("phase_lr_floor must lie in (0, 1] (1 = off)")
        for res, lr in self.lr_per_resolution.items():
            if not (isinstance(res, int) and _power_of_two(res) and self.start_resolution <= res <= self.resolution) \
                    or not (isinstance(lr, (int, float)) and lr > 0):
                raise ValueError(f"lr_per_resolution: {res}: {lr} is not a resolution from start_resolution to "
                                 "resolution with a positive rate")


@dataclass(frozen=True)
class Config(ProgressiveConfig):
    loss: LossKind = "wasserstein"
    gp_lambda: float = 10.0
    drift: float = 0.001
    normalize_latents: bool = True  # PixelNorm on z: latents on the unit hypersphere (times √512)
    pixelnorm: bool = True  # PixelNorm after every G conv


# -- networks ------------------------------------------------------------------------------------------------

class Growing(nn.Module):
    """A network whose active depth is a stage and a fade weight held in buffers (so they follow the state
    dict, the EMA copy and `.to()`); `forward(..., stage, alpha)` may also name them explicitly."""

    def _init_growth(self, final_stage: int) -> None:
        self.final_stage = final_stage
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))
        self.register_buffer("alpha", torch.ones(()))

    def set_phase(self, stage: int, alpha: float) -> None:
        if not 0 <= stage <= self.final_stage or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"phase (stage {stage}, alpha {alpha}) is outside 0..{self.final_stage}, [0, 1]")
        if self.stage.is_meta:
            return
        with torch.no_grad():
            self.stage.fill_(stage)
            self.alpha.fill_(alpha)

    def phase(self, stage: int | None = None, alpha: float | None = None) -> tuple[int, float]:
        return (int(self.stage) if stage is None else stage), (float(self.alpha) if alpha is None else alpha)


def _pn(on: bool) -> nn.Module:
    return PixelNorm() if on else nn.Identity()


class Generator(Growing):
    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        S = stage_of(cfg.resolution)
        self._init_growth(S)
        c = [width(4 * 2 ** s, cfg.fmap_base, cfg.fmap_max) for s in range(S + 1)]
        self.latent_norm = _pn(cfg.normalize_latents)
        blocks = [nn.Sequential(
            LatentTo4x4(cfg.latent_dim, c[0], cfg.gain / 4),  # official: gain √2/4 "to match the Theano code"
            nn.LeakyReLU(LRELU), _pn(cfg.pixelnorm),
            EqualConv2d(c[0], c[0], 3, cfg.gain), nn.LeakyReLU(LRELU), _pn(cfg.pixelnorm))]
        for s in range(1, S + 1):
            blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                EqualConv2d(c[s - 1], c[s], 3, cfg.gain), nn.LeakyReLU(LRELU), _pn(cfg.pixelnorm),
                EqualConv2d(c[s], c[s], 3, cfg.gain), nn.LeakyReLU(LRELU), _pn(cfg.pixelnorm)))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(EqualConv2d(c[s], channels, 1, gain=1.0) for s in range(S + 1))

    def features(self, z: torch.Tensor, upto: int) -> torch.Tensor:
        x = self.blocks[0](self.latent_norm(z))
        for s in range(1, upto + 1):
            x = self.blocks[s](x)
        return x

    def forward(self, z: torch.Tensor, stage: int | None = None, alpha: float | None = None) -> torch.Tensor:
        stage, alpha = self.phase(stage, alpha)
        if stage == 0:
            return self.to_rgb[0](self.features(z, 0))
        prev = self.features(z, stage - 1)
        new = self.to_rgb[stage](self.blocks[stage](prev))
        return grown(new, lambda: upsample2x(self.to_rgb[stage - 1](prev)), alpha)


class Discriminator(Growing):
    """ProGAN's D (also StyleGAN's, with `blur`: a [1, 2, 1] filter before each downsampling conv)."""

    def __init__(self, cfg: ProgressiveConfig, channels: int, blur: bool = False):
        super().__init__()
        S = stage_of(cfg.resolution)
        self._init_growth(S)
        c = [width(4 * 2 ** s, cfg.fmap_base, cfg.fmap_max) for s in range(S + 1)]
        g = cfg.gain
        self.from_rgb = nn.ModuleList(nn.Sequential(EqualConv2d(channels, c[s], 1, g), nn.LeakyReLU(LRELU))
                                      for s in range(S + 1))
        mbstd = [MinibatchStdDev(cfg.mbstd_group)] if cfg.mbstd_group > 1 else []
        extra = 1 if mbstd else 0
        c_dense = max(1, min(cfg.fmap_base, cfg.fmap_max))  # nf(0) of the official code
        blocks = [nn.Sequential(
            *mbstd, EqualConv2d(c[0] + extra, c[0], 3, g), nn.LeakyReLU(LRELU), nn.Flatten(),
            EqualLinear(c[0] * 16, c_dense, g), nn.LeakyReLU(LRELU), EqualLinear(c_dense, 1, gain=1.0))]
        for s in range(1, S + 1):
            # Official order: conv, then (blur,) conv, 2×2 average pool, bias, LeakyReLU; a bias commutes with
            # the average pool, so the conv's own bias is the same thing.
            blocks.append(nn.Sequential(
                EqualConv2d(c[s], c[s], 3, g), nn.LeakyReLU(LRELU), *([Blur()] if blur else []),
                EqualConv2d(c[s], c[s - 1], 3, g), nn.AvgPool2d(2), nn.LeakyReLU(LRELU)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, stage: int | None = None, alpha: float | None = None) -> torch.Tensor:
        stage, alpha = self.phase(stage, alpha)
        if not x.is_meta and x.shape[-1] != 4 * 2 ** stage:
            raise ValueError(f"D is at {4 * 2 ** stage} px (stage {stage}), got {x.shape[-1]} px images")
        h = self.from_rgb[stage](x)
        if stage > 0:
            h = grown(self.blocks[stage](h), lambda: self.from_rgb[stage - 1](downsample2x(x)), alpha)
            for s in range(stage - 1, 0, -1):
                h = self.blocks[s](h)
        return self.blocks[0](h)


class AtPhase(nn.Module):
    """Calls a growing network at a fixed phase (for shape tracing, where the buffers are meta tensors)."""

    def __init__(self, net: nn.Module, stage: int, alpha: float = 1.0):
        super().__init__()
        self.net, self.at_stage, self.at_alpha = net, stage, alpha

    def forward(self, *x):
        return self.net(*x, stage=self.at_stage, alpha=self.at_alpha)


def trace_at(net: nn.Module, stage: int, *shapes: tuple[int, ...]) -> list:
    """Layer rows of `net` at `stage` with α = 1, traced on the meta device (instant at 1024 px)."""
    from zoo.translation import meta_copy

    rows = trace_shapes(AtPhase(meta_copy(net), stage), *(torch.zeros(s, device="meta") for s in shapes))
    return [(p.removeprefix("net."), kind, shape, n) for p, kind, shape, n in rows]


# -- the shared progressive training loop ----------------------------------------------------------------------

class ProgressiveGAN(TwoPlayerGAN):
    """Growth schedule, fade-in of reals, the D/G steps of the shared recipe (plus drift), checkpointed phase.

    Subclasses build `G` and `D` (both `Growing`), call `build_optimizers()` and `_init_growth()`, and
    implement `fakes(n, track)`: a batch of training fakes drawn only from the model's noise generator.
    """
    # Equalised-learning-rate layers scale their weights at run time (no spectral norm, no re-init), the
    # resolution changes as the networks grow (no pool of old fakes) and so do the parameter sets (no
    # historical average); DiffAugment and bCR act on whatever D sees.
    stabilisers = frozenset({"diffaug", "bcr"})

    G: Growing
    D: Growing
    default_channels = 3  # RGB faces, as the papers count parameters

    def _init_growth(self) -> None:
        cfg = self.cfg
        self.schedule = GrowthSchedule(stage_of(cfg.start_resolution), stage_of(cfg.resolution),
                                       cfg.fade_steps, cfg.stable_steps)
        self.steps = 0  # training steps taken: the schedule position
        self.images = 0  # real images shown to D (the paper's unit)
        self.apply_phase(self.schedule.at(0))

    # -- phase -------------------------------------------------------------------------------------------
    def phase_lr_scale(self, steps: int) -> float:
        """The course recipe's annealing within one resolution: 1 for the first half of that resolution's steps
        (its fade-in and stabilisation; the first resolution has no fade, the last runs to the end of
        training), then linear to `phase_lr_floor`."""
        floor = self.cfg.phase_lr_floor
        if floor >= 1:
            return 1.0
        sch = self.schedule
        period = sch.fade_steps + sch.stable_steps
        stage = sch.at(steps).stage
        if stage == sch.start_stage:
            start, length = 0, sch.stable_steps
        else:
            start = sch.stable_steps + (stage - sch.start_stage - 1) * period
            length = period
        if stage == sch.final_stage:
            return 1.0 if length == 0 else (1.0 if steps - start < length / 2 else
                                            max(floor, 1 - (1 - floor) * (steps - start - length / 2) / (length / 2)))
        if length == 0:
            return 1.0
        t = (steps - start) / length
        return 1.0 if t < 0.5 else 1 - (1 - floor) * (t - 0.5) / 0.5

    def apply_phase(self, phase: Phase) -> None:
        nets = [self.G, self.D] + ([self.ema.shadow] if self.ema is not None else [])
        for net in nets:
            net.set_phase(phase.stage, phase.alpha)

    def current_phase(self) -> tuple[int, float]:
        """(stage, α) the live G is at (after a weights-only load: the checkpoint's)."""
        if self.G.stage.is_meta:  # built on the meta device for shapes: the schedule's start
            p = self.schedule.at(self.steps)
            return p.stage, p.alpha
        return self.G.phase()

    @property
    def resolution(self) -> int:
        """The current stage's side length: the runner draws real batches at this size."""
        return 4 * 2 ** self.current_phase()[0]

    @property
    def final_resolution(self) -> int:
        return self.cfg.resolution

    latent_dim = property(lambda self: self.cfg.latent_dim)

    def extra_state(self) -> dict[str, Any]:
        p = self.schedule.at(self.steps)
        return {"growth": {"steps": self.steps, "images": self.images, "stage": p.stage,
                           "resolution": p.resolution, "alpha": p.alpha, "fading": p.fading}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        unknown = sorted(set(state) - {"growth"})
        if unknown:
            raise ValueError(f"{self.family} extra state has unknown keys {unknown}")
        g = state["growth"]
        steps = int(g["steps"])
        p = self.schedule.at(steps)
        if p.stage != g["stage"] or p.alpha != g["alpha"]:
            raise ValueError(f"checkpoint growth phase (stage {g['stage']}, alpha {g['alpha']}) does not match "
                             f"this config's schedule at step {steps} (stage {p.stage}, alpha {p.alpha})")
        self.steps, self.images = steps, int(g["images"])
        self.apply_phase(p)

    # -- training ------------------------------------------------------------------------------------------
    def fakes(self, n: int, track: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def fade_reals(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        """During a fade the reals blend their own lower resolution in, as G's output does (the paper, Fig. 2)."""
        return x if alpha >= 1.0 else blend(upsample2x(downsample2x(x)), x, alpha)

    def adjust_d_loss(self, loss, real_out, fake_out, logs):
        cfg = self.cfg
        if cfg.loss in ("minimax", "nonsaturating"):
            # StyleGAN's D_logistic sums the real and fake terms (the shared recipe averages them), so that
            # R1's γ = 10 weighs the penalty as the official code does.
            loss = 2 * loss
        if cfg.drift:  # ProGAN's ε_drift·E[D(x)²] keeps the critic's output near 0
            drift = real_out.pow(2).mean()
            loss = loss + cfg.drift * drift
            logs["D/drift"] = drift.item()
        return loss

    def generator_fakes(self, n):
        return self.fakes(n, track=True)

    def train_step(self, draw, step):
        self.train(True)
        phase = self.schedule.at(self.steps)
        if self.cfg.reset_optimizer and self.schedule.boundary(self.steps):
            for opt in self.optimizers().values():
                opt.state.clear()
        self.apply_phase(phase)  # before draw(): the runner reads `resolution` to size the reals
        if self.cfg.lr_per_resolution or self.cfg.phase_lr_floor < 1:
            table, scale = self.cfg.lr_per_resolution, self.phase_lr_scale(self.steps)
            for opt, base in ((self.opt_G, self.cfg.lr_G), (self.opt_D, self.cfg.lr_D)):
                for group in opt.param_groups:
                    group["lr"] = table.get(phase.resolution, base) * scale
        logs: dict[str, float] = {}
        real = fake = None
        for _ in range(self.cfg.n_d):
            if real is None or self.cfg.fresh_batches:
                real = self.fade_reals(draw(), phase.alpha)
                self.images += real.shape[0] * self.trainer.world.size
                with torch.no_grad(), self.autocast():
                    fake = self.fakes(real.shape[0]).float()
            logs = self.backward_D(real, fake, step)
        logs.update(self.backward_G(real.shape[0], step))
        self.steps += 1
        self.apply_phase(self.schedule.at(self.steps))
        logs["grow/resolution"], logs["grow/alpha"] = float(phase.resolution), phase.alpha
        return logs

    # -- sampling ------------------------------------------------------------------------------------------
    def to_output(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest-upsampled to the final resolution (while still growing) and clipped to [-1, 1]: the
        networks have linear outputs, as in the papers."""
        return upsample_to(x.float(), self.cfg.resolution).clamp(-1.0, 1.0)

    def card(self) -> dict[str, Any]:
        stage, alpha = self.current_phase()
        return {**super().card(), "growth": {"resolution": 4 * 2 ** stage, "alpha": alpha,
                                             "final_resolution": self.cfg.resolution}}


class ProGAN(ProgressiveGAN):
    family = "progan"
    seed_section = "Karras et al. 2018, Progressive Growing of GANs (ICLR), §2-4, App. A"
    summary = ("ProGAN: progressive growing with fade-in, equalised LR, PixelNorm, minibatch stddev, "
               "WGAN-GP λ 10 + drift 0.001, Adam 1e-3 (0, 0.99)")
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        self.G = Generator(cfg, data.channels)
        self.D = Discriminator(cfg, data.channels)
        self.build_optimizers()
        self._init_growth()

    def fakes(self, n, track=False):
        return self.G(self.noise(n))

    @torch.no_grad()
    def generate(self, z):
        G = self.sampling_net("G")
        G.eval()
        return self.to_output(G(z.to(self.device)))

    def inspect(self):
        S, r, c = self.schedule.final_stage, self.cfg.resolution, self.data.channels
        return {"G": trace_at(self.G, S, (1, self.cfg.latent_dim)), "D": trace_at(self.D, S, (1, c, r, r))}

    def figures(self, out_dir, seed: int = 0) -> dict:
        """The sampling figure a model without W has: a spherical walk in Z (zoo/style_figures.py)."""
        from pathlib import Path

        from zoo import style_figures

        z = self.sample_latent(2, torch.Generator().manual_seed(seed))
        path = Path(out_dir) / "interpolation.png"
        style_figures.latent_interpolation(self, z[0], z[1], space="z", seed=seed, path=path)
        return {"interpolation": path}
