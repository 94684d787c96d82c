"""Pretrained feature spaces beside Inception, built on torch-fidelity 0.4's extractor classes.

- `clip-vit-l-14`: CLIP ViT-L/14's image embedding (768-d; Radford et al. 2021), torch-fidelity's
  `FeatureExtractorCLIP` on OpenAI's TorchScript release file, whose sha256 OpenAI publishes in its URL.
- `dinov2-vit-l-14`: DINOv2 ViT-L/14's CLS token (1024-d; Oquab et al. 2023), the feature space Stein et al.
  2023 (dgm-eval) recommend for FD. torch-fidelity's `FeatureExtractorDinoV2` preprocessing and output with
  the network built in bench/features/dinov2.py (its own constructor needs GitHub at run time) and Meta's
  `dinov2_vitl14_pretrain.pth` loaded with weights_only=True.

Both are resolved through the weights manifest (bench/features/weights.py) like Inception: the file's
sha256 enters the fingerprint and cache keys, and a missing file is one line naming it and how to fetch it.
Neither gives class logits, so IS is unavailable in these spaces; FID, KID, precision/recall and
density/coverage are computed on the embedding ("FID (dinov2-vit-l-14)" is FD_DINOv2).
"""

from __future__ import annotations

import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable

import torch

from bench.errors import BenchError

CLIP = "clip-vit-l-14"
DINOV2 = "dinov2-vit-l-14"


def clip_network(path: Path, device: torch.device) -> torch.nn.Module:
    from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP

    try:
        with redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # torch.jit.load: TorchScript's own archive format, no Python unpickling; the file's digest was checked
            return FeatureExtractorCLIP(CLIP, ["clip"], feature_extractor_weights_path=str(path)).to(device).eval()
    except Exception as exc:
        raise BenchError(f"{path}: not a CLIP ViT-L/14 TorchScript file ({type(exc).__name__})") from None


def dinov2_network(path: Path, device: torch.device) -> torch.nn.Module:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    from bench.features.dinov2 import DinoV2ViTL14
    from bench.io import safe_torch_load

    class _Local(FeatureExtractorDinoV2):
        """torch-fidelity's preprocessing and output; the network from a local file instead of torch.hub."""

        def __init__(self, model: torch.nn.Module):
            FeatureExtractorBase.__init__(self, DINOV2, ["dinov2"])  # torch-fidelity's name for it
            self.feature_extractor_internal_dtype = torch.float32
            self.model = model
            self.requires_grad_(False)
            self.eval()

    net = DinoV2ViTL14()
    try:
        state = safe_torch_load(path)
        net.load_state_dict(state)
    except Exception as exc:
        raise BenchError(f"{path}: not DINOv2 ViT-L/14 weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]})") from None
    return _Local(net).to(device)


def features_fn(name: str, path: Path, device: torch.device) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """uint8 images (grayscale replicated to RGB) -> {'pool': embedding}; each network resizes to its own input."""
    from bench.data.transforms import to_channels

    net = clip_network(path, device) if name == CLIP else dinov2_network(path, device)

    def run(images: torch.Tensor) -> dict[str, torch.Tensor]:
        (feats,) = net(to_channels(images, 3).to(device))
        return {"pool": feats.float().cpu()}

    return run
