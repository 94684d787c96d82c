"""Pix2PixHD (Wang et al. 2018, "High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs", CVPR, §3.2): coarse-to-fine generator, multi-scale PatchGANs, feature matching (official code
NVIDIA/pix2pixHD, `models/networks.py` and `models/pix2pixHD_model.py`).

G1, the global generator: c7s1-64, d128, d256, d512, d1024, R1024×9, u512, u256, u128, u64, c7s1-C;
instance norm (no affine, convs keep bias), reflection padding, tanh. G2, the local enhancer
(`generator: local`): c7s1-32, d64, whose output is summed with G1's last feature map (before G1's final
c7s1-C) computed on the input downsampled 2x, then R64×3, u32, c7s1-C. `ngf` is G1's base width (64); a
local enhancer is ngf/2 wide (the official `--ngf` names the enhancer's width instead, 32 in the paper's
2048x1024 script, which makes the global part 64 again: the same network).

D: `num_D` identical PatchGANs (n_layers 3, instance norm) on the conditional pair concat(input, image)
at 1x, 1/2x, 1/4x, downsampled by AvgPool2d(3, stride 2, padding 1, count_include_pad=False).
`d_padding` 2 is the official ceil((4 − 1)/2) (grids 35/67/131 on 256/512/1024 px); 1 gives pix2pix's
stack (30/62/126). num_D = 3 as in the paper (the official code defaults to 2).

Losses: LSGAN (no ½) summed over the discriminators, D loss 0.5·(real + fake); feature matching
λ_feat = 10 over every D's intermediate layers but the last, weighted 4/(n_layers + 1) per layer and
1/num_D per D, real features detached; VGG19 perceptual loss λ = 10 (1/32 ... 1 over relu1_1 ... relu5_1),
which needs the VGG19 features handed in with `attach_vgg` (weights from the manifest; set `lambda_vgg: 0`
to train without). The official model computes the D(real) features once: they serve as the FM target
and, after the G step, in the D loss. G step, then D step, Adam 2e-4 (0.5, 0.999).

Label-map inputs (cityscapes): G reads the data's `input_channels`, label_nc one-hot channels + the
instance boundary map (bench/data/labelmap.py), and D the pair concat(input, image). Every network is fully
convolutional, so the family declares zoo.base.FrameTranslator: with `dataset.aspect` 2 it trains and translates
whole H x 2H frames (the official cityscapes setting, 1024x512), G, the local enhancer, the discriminators and E
alike. The "semantic network"
variant of a course summary is another family (`pix2pixhd_sem`).

Instance-wise feature encoder (§3.4, "Learning an Instance-level Feature Embedding"; official
`networks.Encoder`, `--instance_feat`, `encode_features.py`), on with `feat_num` > 0 (off by default; the
official value is 3, with nef 16, n_downsample_E 4, n_clusters 10). E reads the photo: c7s1-nef, d(nef·2^i)
×n_downsample_E, u back to nef, c7s1-feat_num, tanh, instance norm, reflection padding (the official layout).
Its output is averaged within each instance of each image (every pixel of an instance gets the instance's
mean, per channel; `instance_mean`) and concatenated to G's input, so G reads input_channels + feat_num
channels; D still sees concat(input, image), as in the official code. E trains jointly with G: its parameters
are in G's optimiser, and it is the module `E` (checkpointed, loaded and warm-started with G and D; an EMA of G
does not cover it). An instance is a set of pixels with one instance id and one class id: on cityscapes, whose
instance ids carry the class, that is exactly the official instance; elsewhere an id spanning several classes
becomes one instance per class. The ids come from the label-map loader (`LabelMaps.instance_ids`) through the
zoo.base.InstanceTranslator interface: `draw.with_instances()` in training, `translate(x, seeds, instances)`.

Test time (multimodal synthesis): once after training (`fit_instance_features`, called by the runner before the
final checkpoint), E encodes every training photo, and each instance larger than 1/64 of its image gives one
feature vector (the official cut: area / (H·W/32) > 0.5); per class, k-means (Lloyd's in float64 from seeded
k-means++ starts, 10 starts, the lowest inertia kept; its sums run in a fixed order, so it adds no dependence on
the thread count to E's forward; the official code uses scikit-learn's KMeans with random_state 0) gives
min(n_clusters, #instances) centres. They are buffers of E (`centres`, `n_centres`): the final checkpoint holds
them (a model loaded from it, weights only, samples as the trained one), and a resumed run recomputes them
identically. At evaluation each instance gets one centre of its class, drawn uniformly with a generator seeded
from the image's `sample_seeds` entry (different evaluation seeds, different reproducible outputs; independent
of the batch), broadcast over its pixels. A class with no centre (never seen in training, or only in instances
below the area cut; the official code leaves such pixels uninitialised) gets the zero feature, as does every
class before the centres are fitted (sample grids drawn during training). `figures()` writes the multimodal
figure: one held-out label map beside G's outputs for five centre draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional, Sequence

import torch
from torch import nn

from bench.data.labelmap import LabelMapSpec
from bench.io import derive
from zoo import losses as L
from zoo.cyclegan import ResnetBlock, c7s1, down, up
from zoo.image_pool import ImagePool
from zoo.layers import dcgan_init
from zoo.patchgan import NLayerDiscriminator, receptive_field
from zoo.base import FrameTranslator, InstanceTranslator, WarmStart, make_optimizer
from zoo.translation import Inspection, TranslationGAN


@dataclass(frozen=True)
class Config:
    resolution: int = 512
    generator: Literal["global", "local"] = "global"
    ngf: int = 64  # the global generator's base width; a local enhancer has ngf / 2**n_local_enhancers
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    ndf: int = 64
    n_layers_D: int = 3
    num_D: int = 3
    d_padding: Literal[1, 2] = 2  # official pix2pixHD: 2 (35x35 on 256 px); 1 = pix2pix's stack (30x30)
    norm: Literal["instance", "batch"] = "instance"
    loss: Literal["lsgan", "nonsaturating"] = "lsgan"
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg_normalize: bool = True  # map [-1, 1] to ImageNet statistics before VGG (the official code does not)
    pool_size: int = 0  # the official default: no image pool
    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    # local enhancer: train only the local branches for the first N steps, the global part frozen (the official
    # `niter_fix_global`, there in epochs), typically after `train.init_from` a trained global generator
    fix_global_steps: int = 0
    # The instance-wise feature encoder (§3.4): feat_num channels of E's per-instance features join G's input;
    # 0 = off (the official default, --instance_feat off); the official value when on is 3
    feat_num: int = 0
    nef: int = 16  # E's base width (official --nef)
    n_downsample_E: int = 4  # official --n_downsample_E
    n_clusters: int = 10  # k-means centres per class for test-time features (official --n_clusters)

    def __post_init__(self):
        if self.fix_global_steps < 0 or (self.fix_global_steps and self.generator != "local"):
            raise ValueError("fix_global_steps is for generator: local (>= 0)")
        halvings = self.n_downsample_global + (self.n_local_enhancers if self.generator == "local" else 0)
        if self.resolution < 2**halvings or self.resolution % 2**halvings:
            raise ValueError(f"the {self.generator} generator halves the image {halvings} times: resolution must "
                             f"be a multiple of {2**halvings}, got {self.resolution}")
        if self.generator == "local" and (self.n_local_enhancers < 1 or self.ngf % 2**self.n_local_enhancers):
            raise ValueError("a local enhancer needs n_local_enhancers >= 1 and ngf divisible by 2**n_local_enhancers")
        if min(self.ngf, self.ndf, self.n_layers_D, self.num_D, self.n_downsample_global) < 1:
            raise ValueError("ngf, ndf, n_layers_D, num_D and n_downsample_global must be positive")
        if self.n_blocks_global < 0 or self.n_blocks_local < 0 or self.pool_size < 0:
            raise ValueError("block counts and pool_size must be >= 0")
        if self.lambda_feat < 0 or self.lambda_vgg < 0:
            raise ValueError("lambda_feat and lambda_vgg must be >= 0")
        if self.lr_G <= 0 or self.lr_D <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("learning rates must be > 0 and betas in [0, 1)")
        if self.feat_num < 0 or min(self.nef, self.n_downsample_E, self.n_clusters) < 1:
            raise ValueError("feat_num must be >= 0 (0 = no feature encoder); nef, n_downsample_E and n_clusters >= 1")
        if self.feat_num and self.resolution % 2**self.n_downsample_E:
            raise ValueError(f"the feature encoder halves the image {self.n_downsample_E} times: resolution must be "
                             f"a multiple of {2**self.n_downsample_E}, got {self.resolution}")


def downsample() -> nn.AvgPool2d:
    """The official 2x downsampler between scales (count_include_pad=False: borders are not darkened)."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


def global_layers(in_ch: int, out_ch: int, ngf: int, n_down: int, n_blocks: int, norm: str) -> list[nn.Module]:
    layers = c7s1(in_ch, ngf, norm)
    for i in range(n_down):
        layers += down(ngf * 2**i, ngf * 2**(i + 1), norm)
    layers += [ResnetBlock(ngf * 2**n_down, norm) for _ in range(n_blocks)]
    for i in range(n_down, 0, -1):
        layers += up(ngf * 2**i, ngf * 2**(i - 1), norm)
    return layers + [*c7s1(ngf, out_ch, None), nn.Tanh()]


class GlobalGenerator(nn.Module):
    """G1: c7s1-ngf, d·n_down, R×n_blocks, u·n_down, c7s1-C, tanh."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsampling: int = 4, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        self.model = nn.Sequential(*global_layers(in_ch, out_ch, ngf, n_downsampling, n_blocks, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LocalEnhancer(nn.Module):
    """G2 around G1: enhancer n (1 = outermost) runs at full/2**(N−n) resolution; its front end
    (c7s1-w, d2w) is summed with the coarser network's last feature map, then R2w×n_blocks_local, uw."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsample_global: int = 4, n_blocks_global: int = 9,
                 n_local_enhancers: int = 1, n_blocks_local: int = 3, norm: str = "instance"):
        super().__init__()
        self.n_local = n_local_enhancers
        # G1 without its output layers (reflection pad, c7s1-C, tanh): it hands over its ngf-wide features.
        self.global_features = nn.Sequential(
            *global_layers(in_ch, out_ch, ngf, n_downsample_global, n_blocks_global, norm)[:-3])
        self.front, self.back = nn.ModuleList(), nn.ModuleList()
        for n in range(1, n_local_enhancers + 1):
            w = ngf // 2**n
            self.front.append(nn.Sequential(*c7s1(in_ch, w, norm), *down(w, 2 * w, norm)))
            back = [ResnetBlock(2 * w, norm) for _ in range(n_blocks_local)] + up(2 * w, w, norm)
            if n == n_local_enhancers:
                back += [*c7s1(w, out_ch, None), nn.Tanh()]
            self.back.append(nn.Sequential(*back))
        self.downsample = downsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.global_features(pyramid[-1])
        for n in range(1, self.n_local + 1):
            out = self.back[n - 1](self.front[n - 1](pyramid[self.n_local - n]) + out)
        return out


class MultiscaleDiscriminator(nn.Module):
    """num_D identical PatchGANs; D_k sees the input downsampled k times. `forward` returns, per D, the
    list of every block's output (the last one is the logit grid)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_D: int = 3, norm: str = "instance",
                 padding: int = 2):
        super().__init__()
        self.n_layers = n_layers
        self.discriminators = nn.ModuleList(NLayerDiscriminator(in_ch, ndf, n_layers, norm, padding)
                                            for _ in range(num_D))
        self.downsample = downsample()

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for k, D in enumerate(self.discriminators):
            if k:
                x = self.downsample(x)
            out.append(D(x, return_features=True))
        return out

    @property
    def receptive_fields(self) -> list[int]:
        """RF of each D in full-resolution pixels: its conv stack after k (3, 2) poolings (70, 141, 283, ...)."""
        convs = self.discriminators[0].conv_layers()
        return [receptive_field([(3, 2)] * k + convs) for k in range(len(self.discriminators))]


def instance_mean(features: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float32: every pixel gets the mean of `features` over the pixels of its image that share its
    unit id (`units`, int (B, H, W)), per channel: E's output pooled per instance (the official Encoder.forward's
    loop over np.unique(inst), per image). Differentiable; float32 whatever autocast made of `features`."""
    means, inverse, _ = unit_means(features, units)
    b, _, h, w = features.shape
    return means[inverse].reshape(b, h, w, -1).permute(0, 3, 1, 2)


def unit_means(features: torch.Tensor, units: torch.Tensor):
    """Per unit (an id within one image; units in image order, then id order): the float32 mean feature (K, C),
    each pixel's unit index (B·H·W,) and the unit's pixel count (K,)."""
    b, c = features.shape[:2]
    keys = units.reshape(b, -1).long()
    span = int(keys.max()) + 1 if keys.numel() else 1
    keys = keys + torch.arange(b, device=keys.device)[:, None] * span  # the same id in two images: two units
    uniq, inverse = torch.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    flat = features.float().permute(0, 2, 3, 1).reshape(-1, c)
    counts = torch.bincount(inverse, minlength=len(uniq))
    sums = flat.new_zeros(len(uniq), c).index_add(0, inverse, flat)
    return sums / counts[:, None].to(flat.dtype), inverse, counts


def kmeans(points: torch.Tensor, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300) -> torch.Tensor:
    """(k, D) float64 centres of `points` (N, D), N >= k: Lloyd's algorithm from k-means++ starts drawn from a
    generator seeded with `seed`, `n_init` starts, the one with the lowest inertia kept (ties: the first). Every
    sum runs in a fixed order (index_add; math.fsum for the inertia), so the result does not depend on threads."""
    x = points.double()
    g = torch.Generator().manual_seed(seed)
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centres = x[torch.randint(len(x), (1,), generator=g)]
        while len(centres) < k:  # k-means++: the next centre with probability proportional to D^2
            d2 = ((x[:, None] - centres[None]) ** 2).sum(-1).min(1).values
            pick = (torch.multinomial(d2, 1, generator=g) if d2.sum() > 0
                    else torch.randint(len(x), (1,), generator=g))
            centres = torch.cat([centres, x[pick]])
        for _ in range(max_iter):
            assign = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            counts = torch.bincount(assign, minlength=k)
            sums = torch.zeros_like(centres).index_add_(0, assign, x)
            moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)  # empty: stays
            if torch.equal(moved, centres):
                break
            centres = moved
        inertia = math.fsum(((x[:, None] - centres[None]) ** 2).sum(-1).min(1).values.tolist())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


class Encoder(nn.Module):
    """E (Wang et al. 2018, §3.4; official networks.Encoder): c7s1-nef, d(nef·2^i) ×n_down, u back to nef,
    c7s1-feat_num, tanh, on the photo; `forward(image, units)` pools its output per instance (`instance_mean`).
    It also keeps the test-time features, up to n_clusters k-means centres per class (`centres`, the first
    `n_centres[c]` rows of class c valid), as buffers: they are checkpointed and loaded with E."""

    def __init__(self, in_ch: int, feat_num: int, nef: int = 16, n_downsampling: int = 4, norm: str = "instance",
                 n_classes: int = 1, n_clusters: int = 10):
        super().__init__()
        self.model = nn.Sequential(*global_layers(in_ch, feat_num, nef, n_downsampling, 0, norm))
        self.register_buffer("centres", torch.zeros(n_classes, n_clusters, feat_num))
        self.register_buffer("n_centres", torch.zeros(n_classes, dtype=torch.long))

    def forward(self, image: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        return instance_mean(self.model(image), units)


# The official encode_features.py keeps an instance for clustering when its area / (H·W // 32) > 0.5, i.e. when it
# covers more than 1/64 of the image (here: of the square tile, or of the whole frame with dataset.aspect).
AREA_BLOCKS = 32
FIGURE_DRAWS = 5  # outputs in the multimodal figure


def input_channels(data) -> int:
    """What G reads: the image's channels, or for label maps (bench/data/labelmap.py) label_nc one-hot
    channels plus the instance boundary map. D sees that input concatenated with the image."""
    return getattr(data, "input_channels", 0) or data.channels


class Pix2PixHD(TranslationGAN, FrameTranslator, InstanceTranslator, WarmStart):
    family = "pix2pixhd"
    task = "paired"
    seed_section = "Wang et al. 2018, Pix2PixHD (CVPR), §3.2; NVIDIA/pix2pixHD"
    summary = "Pix2PixHD: global (+ local enhancer) ResNet G, 3-scale PatchGANs, LSGAN + 10·FM + 10·VGG"
    Config = Config

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        # Whole frames (FrameTranslator, dataset.aspect): height = resolution, width = aspect x resolution with an
        # integer aspect, so Config's divisibility checks of the resolution (G's, the local enhancers' and E's 2x
        # downsamplings) hold for the width too; the discriminators' pooling takes any size.
        c, c_in = data.channels, input_channels(data)
        c_in += cfg.feat_num  # G also reads the per-instance features (D does not)
        if cfg.generator == "global":
            self.G = GlobalGenerator(c_in, c, cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global, cfg.norm)
        else:
            self.G = LocalEnhancer(c_in, c, cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global,
                                   cfg.n_local_enhancers, cfg.n_blocks_local, cfg.norm)
        self.D = MultiscaleDiscriminator(input_channels(data) + c, cfg.ndf, cfg.n_layers_D, cfg.num_D, cfg.norm,
                                         cfg.d_padding)
        dcgan_init(self.G)
        dcgan_init(self.D)
        # Classes of the label maps (the first label_nc input channels are one-hot); other data: one class.
        self.label_nc = data.label_nc if isinstance(data, LabelMapSpec) else 0
        self.E: Optional[Encoder] = None
        g_params = list(self.G.parameters())
        if cfg.feat_num:
            self.E = Encoder(c, cfg.feat_num, cfg.nef, cfg.n_downsample_E, cfg.norm, max(self.label_nc, 1),
                             cfg.n_clusters)
            dcgan_init(self.E)
            g_params += list(self.E.parameters())  # E trains with G, in G's optimiser (official)
        self._figure_input: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.opt_G = make_optimizer(g_params, cfg, cfg.lr_G)
        self.opt_D = make_optimizer(self.D.parameters(), cfg, cfg.lr_D)
        self.vgg: L.VGGPerceptualLoss | None = None
        self.pool = ImagePool(cfg.pool_size, 0.5, torch.Generator())
        self._pool_seeded = False

    def modules(self):
        return {"G": self.G, "D": self.D, **({"E": self.E} if self.E is not None else {})}

    def optimizers(self):
        return {"G": self.opt_G, "D": self.opt_D}

    # -- the instance-wise feature encoder (InstanceTranslator) ----------------------------------------------
    def reads_instances(self) -> bool:
        return self.E is not None

    def units(self, x: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
        """int64 (B, H, W): one id per (instance, class) pair of each image, the pooling unit."""
        n = max(self.label_nc, 1)
        classes = x[:, :self.label_nc].argmax(1) if self.label_nc else torch.zeros_like(instances)
        return instances.long() * n + classes

    @torch.no_grad()
    def fit_instance_features(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """E's features of every training instance above the area cut, clustered per class into E's buffers
        (official encode_features.py). Deterministic: the features come in data order, k-means is seeded."""
        E, n_classes, cfg = self.E, max(self.label_nc, 1), self.cfg
        per_class: list[list[torch.Tensor]] = [[] for _ in range(n_classes)]
        was_training = E.training
        E.eval()
        for x, y, instances in batches:
            units = self.units(x, instances)
            means, inverse, counts = unit_means(E.model(y), units)
            cls = torch.zeros_like(counts).scatter_(0, inverse, units.reshape(-1) % n_classes)
            h, w = units.shape[-2:]
            keep = counts * 2 > (h * w) // AREA_BLOCKS
            for c in cls[keep].unique().tolist():
                per_class[c].append(means[keep & (cls == c)].double().cpu())
        E.train(was_training)
        centres = torch.zeros_like(E.centres, device="cpu")
        n_centres = torch.zeros_like(E.n_centres, device="cpu")
        for c, feats in enumerate(per_class):
            if feats:
                points = torch.cat(feats)
                k = min(cfg.n_clusters, len(points))
                centres[c, :k] = kmeans(points, k, seed=0).float()  # random_state 0, as the official script
                n_centres[c] = k
        E.centres.copy_(centres)
        E.n_centres.copy_(n_centres)

    def sampled_features(self, x: torch.Tensor, instances: torch.Tensor,
                         sample_seeds: Optional[Sequence[int]] = None) -> torch.Tensor:
        """(B, feat_num, H, W): each instance of image i gets one k-means centre of its class, drawn uniformly
        with a generator seeded from sample_seeds[i] (the global RNG without seeds), in instance-id order; a
        class without centres gets zeros."""
        E, n_classes = self.E, max(self.label_nc, 1)
        out = torch.zeros(x.shape[0], self.cfg.feat_num, *x.shape[-2:], device=x.device)
        units = self.units(x, instances)
        for i in range(x.shape[0]):
            keys, inverse = torch.unique(units[i], return_inverse=True)
            cls = keys % n_classes
            n = E.n_centres[cls].cpu()
            g = torch.Generator().manual_seed(int(sample_seeds[i])) if sample_seeds is not None else None
            pick = torch.minimum((torch.rand(len(keys), generator=g) * n).long(), (n - 1).clamp(min=0))
            feats = E.centres[cls, pick.to(cls.device)] * (n > 0).to(x.device)[:, None]
            out[i] = feats[inverse].permute(2, 0, 1)
        return out

    @torch.no_grad()
    def translate(self, x: torch.Tensor, sample_seeds: Optional[Sequence[int]] = None,
                  instances: Optional[torch.Tensor] = None) -> torch.Tensor:
        """G(x) (TranslationGAN.translate); with the feature encoder, G(x, features sampled per instance)."""
        x = x.to(self.device)
        if self.E is not None:
            if instances is None:
                raise ValueError("pix2pixhd with feat_num > 0 reads the inputs' instance ids: "
                                 "translate(x, sample_seeds, instances=ids)")
            x = torch.cat([x, self.sampled_features(x, instances.to(self.device), sample_seeds)], 1)
        return super().translate(x, sample_seeds)

    def attach_figure_input(self, x: torch.Tensor, instances: torch.Tensor) -> None:
        self._figure_input = (x[:1].detach().cpu(), instances[:1].detach().cpu())

    def figures(self, out_dir, seed: int = 0) -> dict:
        """With the feature encoder: `multimodal.png`, one held-out label map (in colour) beside G's outputs for
        FIGURE_DRAWS draws of the cluster centres (Wang et al. 2018, §3.4, Fig. 7's idea), seeded from `seed`."""
        if self.E is None or self._figure_input is None:
            return {}
        from bench.data.labelmap import render_inputs
        from zoo.style_figures import save_figure

        x, instances = self._figure_input
        outs = [self.translate(x, [derive(seed, "multimodal", k)], instances).cpu() for k in range(FIGURE_DRAWS)]
        path = Path(out_dir) / "multimodal.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(torch.cat([render_inputs(x, self.data), *outs]), path, nrow=FIGURE_DRAWS + 1)
        return {"multimodal": path}

    def requires(self) -> frozenset[str]:
        return frozenset({"vgg19"}) if self.cfg.lambda_vgg > 0 else frozenset()

    def attach_vgg(self, features: nn.Module) -> None:
        """Hand in torchvision's vgg19().features with its weights already loaded (never downloaded here).
        It is frozen and not part of modules(): it is not trained or checkpointed."""
        self.vgg = L.VGGPerceptualLoss(features, normalize=self.cfg.vgg_normalize).to(self.device)

    def extra_state(self):
        return {"pool": self.pool.state_dict(), "pool_seeded": self._pool_seeded}

    def load_extra_state(self, state):
        self.pool.load_state_dict(state["pool"])
        self._pool_seeded = bool(state["pool_seeded"])

    def warm_start(self, payload, source):
        """From a pix2pixhd checkpoint: the same generator type loads G and D whole (fine-tuning); a local
        enhancer from a global generator takes G1's layers up to its output block into its global part, as the
        paper's staged training (Wang et al. 2018, §3.2: G1 first, then G2 with G1 inside). With feat_num > 0 the
        feature encoder E (and its centres) comes along; the source must have one."""
        if payload.get("family") != self.family:
            raise ValueError(f"{source} is a '{payload.get('family')}' checkpoint, not pix2pixhd")
        g = payload["modules"]["G"]
        if self.cfg.generator == "local" and any(k.startswith("model.") for k in g):
            target = self.G.global_features.state_dict()
            taken = {k: g[f"model.{k}"] for k in target if f"model.{k}" in g}
            if set(taken) != set(target):
                raise ValueError(f"{source}: its global generator does not match this local enhancer's global part "
                                 "(ngf, n_downsample_global, n_blocks_global and norm must agree)")
            try:
                self.G.global_features.load_state_dict(taken)
            except RuntimeError as exc:
                raise ValueError(f"{source}: its global generator does not match this local enhancer's global part "
                                 f"({str(exc).splitlines()[-1].strip()})") from None
            took = f"global generator of {source} -> this local enhancer's global part ({len(taken)} tensors)"
            return took + self._warm_start_E(payload, source)
        try:
            self.G.load_state_dict(g)
            self.D.load_state_dict(payload["modules"]["D"])
        except RuntimeError as exc:
            raise ValueError(f"{source}: does not fit this entry ({str(exc).splitlines()[-1].strip()})") from None
        return f"G and D of {source}" + self._warm_start_E(payload, source)

    def _warm_start_E(self, payload, source) -> str:
        """The feature encoder (with its centres) of a checkpoint that has one, when this entry has one too."""
        if self.E is None:
            return ""
        if "E" not in payload["modules"]:
            raise ValueError(f"{source} has no feature encoder E (feat_num 0) for this entry's feat_num "
                             f"{self.cfg.feat_num}")
        try:
            self.E.load_state_dict(payload["modules"]["E"])
        except RuntimeError as exc:
            raise ValueError(f"{source}: its feature encoder does not fit this entry "
                             f"({str(exc).splitlines()[-1].strip()})") from None
        return ", and its feature encoder E"

    def train_step(self, draw, step):
        cfg = self.cfg
        if cfg.fix_global_steps:  # the global part trains again from step fix_global_steps on
            self.G.global_features.requires_grad_(step >= cfg.fix_global_steps)
        if "vgg19" in self.requires() and self.vgg is None:
            raise RuntimeError("pix2pixhd's VGG loss needs VGG19 features: call attach_vgg(features) first, "
                               "or set lambda_vgg: 0")
        self.train(True)
        if self.E is not None:  # G reads E's photo features pooled per instance (§3.4), E learns through G's loss
            x, y, instances = draw.with_instances()
        else:
            x, y = draw()
        with self.autocast():
            fake = self.G(x if self.E is None else torch.cat([x, self.E(y, self.units(x, instances))], 1))
            real_feats = self.D(torch.cat([x, y], 1))  # FM target now (detached), D loss after the G step
        # G step: D frozen
        self.D.requires_grad_(False)
        with self.autocast():
            fake_feats = self.D(torch.cat([x, fake], 1))
        fake_feats = [[f.float() for f in fs] for fs in fake_feats]
        real_f32 = [[f.float() for f in fs] for fs in real_feats]
        loss_gan = L.multiscale_adversarial(cfg.loss, fake_feats, 1.0)
        loss_fm = L.feature_matching(real_f32, fake_feats, cfg.n_layers_D, cfg.lambda_feat)
        loss_G = loss_gan + loss_fm
        logs = {"G/gan": loss_gan.item(), "G/feat": loss_fm.item()}
        if "vgg19" in self.requires():
            with self.autocast():
                loss_vgg = cfg.lambda_vgg * self.vgg(fake, y).float()
            loss_G = loss_G + loss_vgg
            logs["G/vgg"] = loss_vgg.item()
        self.update("G", loss_G)
        self.D.requires_grad_(True)
        # D step
        if not self._pool_seeded:
            self.pool.generator.manual_seed(int(torch.randint(0, 2**62, (), generator=self.noise_rng)))
            self._pool_seeded = True
        fake_in = self.pool.query(torch.cat([x, fake.detach()], 1))
        with self.autocast():
            pool_feats = self.D(fake_in)
        loss_real = L.multiscale_adversarial(cfg.loss, [[fs[-1]] for fs in real_f32], 1.0)
        loss_fake = L.multiscale_adversarial(cfg.loss, [[fs[-1].float()] for fs in pool_feats], 0.0)
        loss_D = 0.5 * (loss_real + loss_fake)
        self.update("D", loss_D)
        return {"G": loss_G.item(), **logs, "D": loss_D.item(), "D/real": loss_real.item(), "D/fake": loss_fake.item()}

    def receptive_fields(self):
        return {"D": self.D.receptive_fields}

    def inspect(self):
        if self.E is None:
            return self.conditional_inspection(input_channels(self.data))
        (h, w), c, c_in = self.frame, self.data.channels, input_channels(self.data)
        rows = {"G": self._trace(self.G, (1, c_in + self.cfg.feat_num, h, w)),
                "D": self._trace(self.D, (1, c_in + c, h, w)),
                # E's layers on the photo (the per-instance pooling after them has no parameters)
                "E": [(f"model.{p}", *rest) for p, *rest in self._trace(self.E.model, (1, c, h, w))]}
        return Inspection(rows, self.receptive_fields())
