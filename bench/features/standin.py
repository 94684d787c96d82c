"""Seeded random-init `inception-v3-compat` weights: for tests and timing, never for scores.

Pretrained weights cannot be had offline. Tests use these to run the real Inception code path, and
`bench perf metrics` uses them to time Inception when the pretrained file is absent (speed does not
depend on the weight values).

A random-init Inception has vanishing activations (features ~1e-7, every FID ~0), so agreement
between two implementations on it would prove nothing. The BatchNorm running statistics are
therefore calibrated on random images (train mode, momentum None = cumulative average, a few
batches) before saving, which gives unit-scale, non-degenerate features through the real code path.
These weights are NOT pretrained: no number computed with them means anything about image quality.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from bench.io import atomic_torch_save


class _Untrained(FeatureExtractorInceptionV3):
    """torch-fidelity's exact architecture; an empty state dict leaves the random init in place."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        if state_dict:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        return None


def build_test_inception_weights(path: str | Path, seed: int = 0, batches: int = 3, batch_size: int = 8,
                                 side: int = 64) -> tuple[str, str]:
    """Write calibrated random-init weights to `path`; returns (path, sha256 of the file)."""
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _Untrained("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(batches):
            net((torch.rand(batch_size, 3, side, side, generator=gen) * 255).to(torch.uint8))
    for bn in bns:
        bn.momentum = 0.1
        bn.eval()
    sha = atomic_torch_save(net.state_dict(), path)
    return str(path), sha


def build_test_clip_weights(path: str | Path, seed: int = 0) -> tuple[str, str]:
    """Seeded random-init CLIP ViT-L/14 weights as a TorchScript archive laid out as OpenAI's release (the
    `visual.*` tower at 224 px with 14 px patches, width 1024, 24 layers, a 768-d projection, and the
    `text_projection` whose width torch-fidelity reads the embedding size from), stored in float16 as the
    release is. LayerNorm keeps random features unit-scale, so no calibration is needed. NOT pretrained."""
    from torch_fidelity.feature_extractor_clip import VisionTransformer

    class _Archive(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = VisionTransformer(input_resolution=224, patch_size=14, width=1024, layers=24, heads=16,
                                            output_dim=768)
            self.text_projection = nn.Parameter(torch.randn(768, 768) * 768 ** -0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # never used: the archive is read for its weights
            return x @ self.text_projection

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _Archive().half()
    archive = torch.jit.trace(net, torch.zeros(1, 768, dtype=torch.float16))
    tmp = path.with_name(path.name + ".tmp")
    torch.jit.save(archive, str(tmp))
    tmp.replace(path)
    from bench.io import sha256_file

    return str(path), sha256_file(path)


def build_test_dinov2_weights(path: str | Path, seed: int = 0) -> tuple[str, str]:
    """Seeded random-init DINOv2 ViT-L/14 weights in the official state-dict layout (float16 to halve the
    file; they load into the float32 network). NOT pretrained."""
    from bench.features.dinov2 import DinoV2ViTL14

    net = DinoV2ViTL14()
    net.init_random(torch.Generator().manual_seed(seed))
    state = {k: v.half() for k, v in net.state_dict().items()}
    sha = atomic_torch_save(state, Path(path))
    return str(path), sha
