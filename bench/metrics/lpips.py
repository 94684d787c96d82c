"""LPIPS (Zhang et al. 2018) between a translation model's outputs and their targets.

The `lpips` package supplies the network and its v0.1 linear heads (shipped inside the package);
inputs are in [-1, 1], as the package expects. The backbone is AlexNet by default
(`settings.lpips_net`: "alex" or "vgg"). The package would normally have torchvision download the
ImageNet backbone when it builds the network. That must never happen here, so the network is built
with a random backbone (`pnet_rand=True`, no download), and the ImageNet weights are then loaded from
the file that the weights manifest resolves ("alexnet" or "vgg16"), checked by sha256.

Backbone mapping: lpips splits torchvision's `features` Sequential into `slice1..slice5`, and inside
each slice it registers every layer under its torchvision index (`slice2.3` is `features[3]`). So
`features.{i}.{param}` goes to `net.slice{k}.{i}.{param}`, where k is the slice holding index i.
The load is strict: every backbone tensor must come from the file, and no `features.*` tensor in the
file may be left over (a left-over one would mean a different architecture, e.g. a _bn variant).

Missing weights raise `MetricUnavailable` with the manifest's one-line reason; no number is invented.
The built network is cached per process, keyed by backbone, weights sha256 and device, so the
evaluation seeds share one network.

AlexNet needs images of at least 31×31 and VGG-16 of at least 16×16 (smaller inputs vanish in the
pooling layers); smaller images raise `MetricUnavailable` rather than being silently resized.
Grayscale images are replicated to 3 channels.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import lpips as lpips_pkg
import numpy as np
import torch

from bench.errors import BenchError
from bench.features import weights as weights_manifest
from bench.io import offline, sha256_file
from bench.metrics.base import Key, Metric, MetricContext, MetricUnavailable

# lpips net name -> (weights manifest entry of its ImageNet backbone, smallest image side it accepts)
BACKBONES = {"alex": ("alexnet", 31), "vgg": ("vgg16", 16)}
_ALIASES = {"alexnet": "alex", "vgg16": "vgg"}

_CACHE: dict[tuple[str, str, str], lpips_pkg.LPIPS] = {}


def net_name(net: str) -> str:
    net = _ALIASES.get(net, net)
    if net not in BACKBONES:
        raise BenchError(f"unknown lpips_net '{net}'; valid: {', '.join(sorted(BACKBONES))}")
    return net


def backbone_key_map(model: lpips_pkg.LPIPS) -> dict[str, str]:
    """torchvision `features.{i}.{param}` -> key in `model.net`'s state dict, for every backbone tensor."""
    out = {}
    for slice_name, block in model.net.named_children():
        for index, layer in block.named_children():
            for param in layer.state_dict():
                out[f"features.{index}.{param}"] = f"{slice_name}.{index}.{param}"
    return out


def load_backbone(model: lpips_pkg.LPIPS, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a torchvision AlexNet/VGG-16 state dict into the lpips backbone; every tensor or an error."""
    mapping = backbone_key_map(model)
    missing = sorted(k for k in mapping if k not in state_dict)
    if missing:
        raise ValueError(f"backbone state dict lacks {len(missing)} tensors the lpips net needs, e.g. {missing[:3]}")
    leftover = sorted(k for k in state_dict if k.startswith("features.") and k not in mapping)
    if leftover:
        raise ValueError(f"backbone state dict has features the lpips net does not use, e.g. {leftover[:3]}; "
                         "wrong architecture?")
    # strict=True also rejects shape mismatches and any backbone tensor the mapping failed to cover.
    model.net.load_state_dict({dst: state_dict[src] for src, dst in mapping.items()}, strict=True)


def _check_heads_loaded(model: lpips_pkg.LPIPS, net: str) -> None:
    """lpips loads its linear heads with strict=False; make sure every one of them really came from the file."""
    import os

    path = os.path.join(os.path.dirname(lpips_pkg.__file__), "weights", "v0.1", f"{net}.pth")
    digest = sha256_file(Path(path))
    if digest != weights_manifest.LPIPS_HEADS_SHA256[net]:
        raise BenchError(f"lpips v0.1 linear heads {path} have sha256 {digest}, not the published "
                         f"{weights_manifest.LPIPS_HEADS_SHA256[net]}; install lpips 0.1.4 (pip install lpips==0.1.4)")
    heads = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    bad = [k for k, v in heads.items() if k not in own or not torch.equal(own[k].cpu(), v)]
    if bad or not heads:
        raise RuntimeError(f"lpips v0.1 linear heads for '{net}' did not load from {path}: {bad[:3]}")


def build_lpips(net: str = "alex", backbone_state_dict: Optional[dict[str, torch.Tensor]] = None) -> lpips_pkg.LPIPS:
    """An eval-mode, frozen LPIPS network with v0.1 heads and the given torchvision backbone weights.

    Without a state dict the backbone file is resolved through the weights manifest (BenchError if absent).
    """
    net = net_name(net)
    if backbone_state_dict is None:
        path, _ = weights_manifest.resolve(BACKBONES[net][0], allow_download=not offline())
        backbone_state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # The random initialisation is overwritten below; fork_rng keeps it from consuming the global RNG,
    # and the warnings are torchvision's deprecation notes about lpips' `pretrained=` call.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips_pkg.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    _check_heads_loaded(model, net)
    load_backbone(model, backbone_state_dict)
    model.eval().requires_grad_(False)
    return model


def lpips_network(ctx: MetricContext, metric: str, net: Optional[str] = None) -> lpips_pkg.LPIPS:
    """The cached network for this context's settings (or the given backbone) and device; MetricUnavailable
    when weights are missing."""
    net = net_name(net or getattr(ctx.settings, "lpips_net", "alex"))
    try:
        path, sha = weights_manifest.resolve(BACKBONES[net][0], allow_download=not offline())
        key = (net, sha, str(ctx.device))
        if key not in _CACHE:
            state = torch.load(path, map_location="cpu", weights_only=True)
            _CACHE[key] = build_lpips(net, state).to(ctx.device)
    except BenchError as e:  # no backbone file, or heads that are not the published ones
        raise MetricUnavailable(f"{metric}: {e}") from None
    return _CACHE[key]


def prepare(x: torch.Tensor, model: lpips_pkg.LPIPS, device: torch.device, metric: str) -> torch.Tensor:
    """float32 RGB on the device; grayscale replicated to 3 channels; too-small images refused."""
    net = _ALIASES.get(model.pnet_type, model.pnet_type)
    side = BACKBONES[net][1]
    if min(x.shape[-2:]) < side:
        raise MetricUnavailable(f"{metric}: lpips/{net} needs images of at least {side}x{side}; "
                                f"got {x.shape[-2]}x{x.shape[-1]}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.to(device=device, dtype=torch.float32)


@torch.no_grad()
def distances(model: lpips_pkg.LPIPS, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              metric: str = "lpips") -> np.ndarray:
    """Per-image LPIPS (float64) of two (B, C, H, W) batches in [-1, 1]."""
    if x.shape != y.shape:
        raise ValueError(f"LPIPS of batches with different shapes {tuple(x.shape)} and {tuple(y.shape)}")
    d = model(prepare(x, model, device, metric), prepare(y, model, device, metric))
    return d.flatten().double().cpu().numpy()


def compute(ctx: MetricContext) -> dict[str, float]:
    if ctx.pairs is None:
        raise MetricUnavailable("lpips needs a paired translation model (no (output, target) pairs here)")
    model = lpips_network(ctx, "lpips")
    values = [distances(model, out, tgt, ctx.device) for out, tgt in ctx.pairs()]
    if not values:
        raise MetricUnavailable("lpips: the paired stream yielded no images")
    v = np.concatenate(values)
    return {"lpips": float(v.mean()), "lpips/std": float(v.std())}


LPIPS = Metric("lpips", keys=(Key("lpips", False, "LPIPS", table=True),), needs="paired", compute=compute,
               description="learned perceptual distance of output vs target (AlexNet, v0.1 heads); 0 = identical")
