"""StyleGAN v1 (Karras, Laine & Aila 2019, "A Style-Based Generator Architecture for Generative Adversarial
Networks", CVPR; official code NVlabs/stylegan), grown as ProGAN.

Mapping network f: z (512, PixelNorm-ed) -> 8 × [equalised dense 512 -> 512, learning-rate multiplier 0.01,
LeakyReLU 0.2] -> w. Synthesis: a learned 4×4×512 constant, then per layer (two per resolution, 18 at
1024 px) conv -> noise injection (one N(0, 1) map per sample, a learned per-channel scale initialised to 0)
-> bias -> LeakyReLU 0.2 -> AdaIN with (y_s, y_b) = A(w), the official v1 order (`layer_epilogue` in
NVlabs/stylegan `training/networks_stylegan.py`; the conv -> IN -> style -> noise -> activation order of
some course descriptions differs). Upsampling layers are 2× nearest -> 3×3 conv -> [1, 2, 1]
blur; a 1×1 toRGB per resolution with ProGAN's fade-in. D is ProGAN's with the blur before every downsampling
conv (`zoo.progan.Discriminator`).

Training (`train_step`): non-saturating logistic loss, the D loss summing the real and fake terms
(D_logistic), R1 γ = 10 on reals; Adam 1e-3 with betas (0, 0.99) for both networks (the paper's appendix C;
a course recipe of G 3e-4 / D 2e-4 with β1 0.5 is not the paper's). Style-mixing regularisation (§3.1)
with probability `style_mixing_prob` (official 0.9, `G_style` in `networks_stylegan.py`; a course
description says 40% mixed, which is not the official value): a second latent's w takes over
from a crossover layer drawn uniformly from 1 .. (active layers − 1). The decision and crossover are drawn
per sample (the official code draws one per minibatch) so that data-parallel ranks see exactly what one
process sees. w_avg tracks the batch mean of w (before mixing) with decay 0.995 in every G step, in a buffer of
G, so it is in the state dict and the EMA copy.

Sampling: `generate(z)` truncates w towards w_avg with `truncation_psi` on the first `truncation_cutoff`
layers (default ψ = 1: no truncation, as the paper's FID; the figures use 0.7 on 8 layers) and draws each
sample's noise maps from a generator seeded by a hash of that sample's z, so a score does not depend on the
evaluation batch size. `zoo.style_figures` draws the ψ sweep, style mixing grid, noise resampling and
interpolation figures.

Parameter count (3 channels, 1024 px, fmap_base 8192 / fmap_max 512, the FFHQ config): G = 26,219,627, the
"Total" the official TF `Gs.print_layers()` prints (NVlabs/stylegan README), i.e. every *trainable* variable:
  mapping 8 × (512·512 + 512) = 2,101,248;
  synthesis 24,118,379 = const 4·4·512 = 8,192
    + per layer (C channels, w 512): conv 9·C_in·C (no conv bias) + noise scale C + bias C + style affine
      512·2C + 2C, i.e. 1028·C besides the conv (4×4: 526,336 ×2 + conv 2,359,296; each 512-wide stage
      5,771,264; 64 px 2,295,808; 128 px 705,536; 256 px 242,176; 512 px 93,440; 1024 px 39,808)
    + the toRGB layers of all nine resolutions (7,659; the growing network needs them all).
  Not counted (not trainable in the official graph either): w_avg (512, a buffer here), the lod/stage
  and α buffers, the official fixed per-layer noise inputs noise0..noise17 (this zoo draws noise instead of
  storing it) and the blur kernels. D = 23,087,249, the same as ProGAN's D (blur has no parameters).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo.base import StyleSampler
from zoo.progan import (Discriminator, Growing, LossKind, ProgressiveConfig, ProgressiveGAN, stage_of,
                        trace_at)
from zoo.style_layers import (LRELU, AdaIN, Bias, Blur, ConstantInput, EqualConv2d, EqualLinear,
                              NoiseInjection, PixelNorm, grown, upsample2x, width)


@dataclass(frozen=True)
class Config(ProgressiveConfig):
    loss: LossKind = "nonsaturating"
    r1_gamma: float = 10.0
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lrmul: float = 0.01
    style_mixing_prob: float = 0.9  # official (networks_stylegan.py G_style); a course description: 0.4
    truncation_psi: float = 1.0  # applied by generate(): 1 = none (FID); the paper's figures use 0.7
    truncation_cutoff: int = 8  # truncate layers < cutoff (8 = 4..32 px); 0 = every layer
    w_avg_decay: float = 0.995
    use_noise: bool = True
    blur: bool = True
    # per-layer order after each conv: the official v1 one, or the course's conv -> IN -> style -> noise -> act
    layer_order: Literal["official", "course"] = "official"

    def __post_init__(self):
        super().__post_init__()
        if min(self.w_dim, self.mapping_layers) < 1 or self.mapping_lrmul <= 0:
            raise ValueError("w_dim and mapping_layers must be >= 1 and mapping_lrmul > 0")
        if not 0.0 <= self.style_mixing_prob <= 1.0:
            raise ValueError(f"style_mixing_prob must lie in [0, 1], got {self.style_mixing_prob}")
        if not 0.0 <= self.w_avg_decay < 1.0:
            raise ValueError(f"w_avg_decay must lie in [0, 1), got {self.w_avg_decay}")
        if self.truncation_cutoff < 0:
            raise ValueError("truncation_cutoff must be >= 0 (0 = every layer)")


class MappingNetwork(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        layers: list[nn.Module] = [PixelNorm()]
        for i in range(cfg.mapping_layers):
            layers += [EqualLinear(cfg.latent_dim if i == 0 else cfg.w_dim, cfg.w_dim, cfg.gain, cfg.mapping_lrmul),
                       nn.LeakyReLU(LRELU)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LayerEpilogue(nn.Module):
    """What follows every synthesis conv. `official`: noise -> bias -> LeakyReLU -> AdaIN(·, w), so every layer
    ends normalised and styled. `course`: IN -> style (AdaIN) -> noise -> bias -> LeakyReLU, the order a course
    description gives (the noise then reaches the activation unnormalised). Same parameters either way."""

    def __init__(self, channels: int, w_dim: int, use_noise: bool, order: str = "official"):
        super().__init__()
        self.noise = NoiseInjection(channels) if use_noise else None
        self.bias = Bias(channels)
        self.act = nn.LeakyReLU(LRELU)
        self.adain = AdaIN(channels, w_dim)
        self.order = order

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if self.order == "course":
            x = self.adain(x, w)
            if self.noise is not None:
                x = self.noise(x, noise)
            return self.act(self.bias(x))
        if self.noise is not None:
            x = self.noise(x, noise)
        return self.adain(self.act(self.bias(x)), w)


class SynthesisBlock(nn.Module):
    """One resolution: (constant | upsample -> conv -> blur) -> epilogue -> conv -> epilogue."""

    def __init__(self, c_in: int, c_out: int, cfg: Config, first: bool):
        super().__init__()
        if first:
            self.const = ConstantInput(c_out)
        else:
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.conv0 = EqualConv2d(c_in, c_out, 3, cfg.gain, bias=False)
            self.blur = Blur() if cfg.blur else nn.Identity()
        self.first = first
        self.epi0 = LayerEpilogue(c_out, cfg.w_dim, cfg.use_noise, cfg.layer_order)
        self.conv1 = EqualConv2d(c_out, c_out, 3, cfg.gain, bias=False)
        self.epi1 = LayerEpilogue(c_out, cfg.w_dim, cfg.use_noise, cfg.layer_order)

    def forward(self, x, w0, w1, n0=None, n1=None):
        x = self.const(w0) if self.first else self.blur(self.conv0(self.up(x)))
        x = self.epi0(x, w0, n0)
        return self.epi1(self.conv1(x), w1, n1)


class Generator(Growing):
    """Mapping + synthesis + the tracked w_avg. Styles are (B, num_layers, w_dim): layer i is at 4·2^(i//2) px."""

    def __init__(self, cfg: Config, channels: int):
        super().__init__()
        S = stage_of(cfg.resolution)
        self._init_growth(S)
        c = [width(4 * 2 ** s, cfg.fmap_base, cfg.fmap_max) for s in range(S + 1)]
        self.mapping = MappingNetwork(cfg)
        self.blocks = nn.ModuleList(SynthesisBlock(c[max(s - 1, 0)], c[s], cfg, s == 0) for s in range(S + 1))
        self.to_rgb = nn.ModuleList(EqualConv2d(c[s], channels, 1, gain=1.0) for s in range(S + 1))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.num_layers = 2 * (S + 1)

    @staticmethod
    def layers_at(stage: int) -> int:
        return 2 * (stage + 1)

    @staticmethod
    def layer_resolution(i: int) -> int:
        return 4 * 2 ** (i // 2)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """One w for every layer: (B, w_dim) -> (B, num_layers, w_dim)."""
        return w.unsqueeze(1).repeat(1, self.num_layers, 1)

    def truncate(self, ws: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
        """w' = w_avg + ψ·(w − w_avg) on layers < cutoff (None or 0: every layer)."""
        if psi == 1.0:
            return ws
        cut = self.num_layers if not cutoff else min(cutoff, self.num_layers)
        avg = self.w_avg.to(ws.dtype)
        layer = torch.arange(self.num_layers, device=ws.device).view(1, -1, 1)
        return torch.where(layer < cut, avg + psi * (ws - avg), ws)

    def mix(self, ws1: torch.Tensor, ws2: torch.Tensor, cutoff: torch.Tensor | int) -> torch.Tensor:
        """Layers < cutoff (per sample, or one int) take ws1, the rest ws2."""
        layer = torch.arange(self.num_layers, device=ws1.device).view(1, -1, 1)
        cutoff = torch.as_tensor(cutoff, device=ws1.device).view(-1, 1, 1)
        return torch.where(layer < cutoff, ws1, ws2)

    @torch.no_grad()
    def track_w_avg(self, batch_mean: torch.Tensor, decay: float) -> None:
        self.w_avg.copy_(torch.lerp(batch_mean.float(), self.w_avg, decay))

    def synthesis(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None, stage: int | None = None,
                  alpha: float | None = None) -> torch.Tensor:
        stage, alpha = self.phase(stage, alpha)
        noise = list(noise) if noise is not None else []
        noise += [None] * (self.layers_at(stage) - len(noise))
        x = prev = None
        for s in range(stage + 1):
            prev = x
            x = self.blocks[s](x, ws[:, 2 * s], ws[:, 2 * s + 1], noise[2 * s], noise[2 * s + 1])
        new = self.to_rgb[stage](x)
        if stage == 0:
            return new
        return grown(new, lambda: upsample2x(self.to_rgb[stage - 1](prev)), alpha)

    def forward(self, z: torch.Tensor, stage: int | None = None, alpha: float | None = None,
                noise: list[torch.Tensor] | None = None, psi: float = 1.0, cutoff: int | None = None):
        return self.synthesis(self.truncate(self.broadcast(self.mapping(z)), psi, cutoff), noise, stage, alpha)


def z_seed(z: torch.Tensor) -> int:
    """A 63-bit seed from one latent's float32 bytes: the same z always gets the same noise maps."""
    return int.from_bytes(hashlib.sha256(z.detach().float().cpu().contiguous().numpy().tobytes()).digest()[:8],
                          "little") >> 1


class StyleGAN(ProgressiveGAN, StyleSampler):
    family = "stylegan"
    seed_section = "Karras et al. 2019, StyleGAN (CVPR), §2-3, App. C; NVlabs/stylegan"
    summary = ("StyleGAN v1: mapping network (8 FC, lr×0.01), constant input, noise + AdaIN per layer, "
               "style mixing, truncation, progressive growing; NS loss + R1 γ 10, Adam 1e-3 (0, 0.99)")
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        self.G = Generator(cfg, data.channels)
        self.D = Discriminator(cfg, data.channels, blur=cfg.blur)
        self.build_optimizers()
        self._init_growth()

    # -- training ------------------------------------------------------------------------------------------
    def fakes(self, n, track=False):
        cfg, G = self.cfg, self.G
        stage, _ = G.phase()
        layers = G.layers_at(stage)
        w = G.mapping(self.noise(n))
        if track:
            self._track(w)
        ws = G.broadcast(w)
        if cfg.style_mixing_prob > 0:
            ws2 = G.broadcast(G.mapping(self.noise(n)))
            mixed = self.local_rand(n) < cfg.style_mixing_prob
            crossover = 1 + (self.local_rand(n) * (layers - 1)).long()  # uniform in 1 .. layers − 1
            ws = G.mix(ws, ws2, torch.where(mixed, crossover, torch.full_like(crossover, layers)))
        noise = None
        if cfg.use_noise:
            noise = [self.local_rand(n, 1, r, r, normal=True) for r in map(G.layer_resolution, range(layers))]
        return G.synthesis(ws, noise)

    def _track(self, w: torch.Tensor) -> None:
        mean = w.detach().float().mean(0)
        world = self.trainer.world
        if world.active:  # every rank tracks the global batch mean, so the buffers agree
            torch.distributed.all_reduce(mean)
            mean /= world.size
        self.G.track_w_avg(mean, self.cfg.w_avg_decay)

    # -- sampling ------------------------------------------------------------------------------------------
    def noise_maps(self, n: int, generator: torch.Generator | None = None, G: Generator | None = None,
                   zero: bool = False) -> list[torch.Tensor] | None:
        """Noise maps for the active layers: N(0, 1) from `generator` (CPU), or zeros."""
        G = G or self.sampling_net("G")
        if not self.cfg.use_noise:
            return None
        stage, _ = G.phase()
        out = []
        for i in range(G.layers_at(stage)):
            r = G.layer_resolution(i)
            m = torch.zeros(n, 1, r, r) if zero else torch.randn(n, 1, r, r, generator=generator)
            out.append(m.to(self.device))
        return out

    def seeded_noise(self, z: torch.Tensor, G: Generator | None = None) -> list[torch.Tensor] | None:
        """Each sample's noise maps drawn from a generator seeded by its own z (batch-size independent)."""
        per_sample = [self.noise_maps(1, torch.Generator().manual_seed(z_seed(zi)), G) for zi in z]
        if per_sample[0] is None:
            return None
        return [torch.cat(layer) for layer in zip(*per_sample)]

    @torch.no_grad()
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """w = f(z) of the sampling network, (B, w_dim)."""
        G = self.sampling_net("G")
        G.eval()
        return G.mapping(z.to(self.device))

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None, psi: float = 1.0,
                   cutoff: int | None = None) -> torch.Tensor:
        """Images in [-1, 1] at the final resolution from per-layer styles (B, num_layers, w_dim) or one w
        (B, w_dim), truncated with ψ on layers < cutoff, with the given noise maps (None: no noise)."""
        G = self.sampling_net("G")
        G.eval()
        ws = ws.to(self.device)
        if ws.dim() == 2:
            ws = G.broadcast(ws)
        return self.to_output(G.synthesis(G.truncate(ws, psi, cutoff), noise))

    @torch.no_grad()
    def generate(self, z, truncation_psi: float | None = None):
        G = self.sampling_net("G")
        G.eval()
        z = z.to(self.device)
        psi = self.cfg.truncation_psi if truncation_psi is None else truncation_psi
        ws = G.broadcast(G.mapping(z))
        return self.synthesize(ws, self.seeded_noise(z, G), psi, self.cfg.truncation_cutoff)

    def figures(self, out_dir, seed: int = 0) -> dict:
        """Truncation sweep, style mixing grid, noise resampling and W interpolation as PNGs (zoo/style_figures.py)."""
        from zoo import style_figures

        return style_figures.write_figures(self, out_dir, seed=seed)

    def inspect(self):
        S, r, c = self.schedule.final_stage, self.cfg.resolution, self.data.channels
        return {"G": trace_at(self.G, S, (1, self.cfg.latent_dim)), "D": trace_at(self.D, S, (1, c, r, r))}

    def param_breakdown(self) -> dict[str, int]:
        """G's trainable parameters by part (the model card's derivation of the official 26,219,627)."""
        G = self.G
        count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
        return {"mapping": count([G.mapping]), "synthesis_blocks": count(G.blocks), "to_rgb": count(G.to_rgb)}
