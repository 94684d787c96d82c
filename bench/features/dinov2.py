"""DINOv2 ViT-L/14 (Oquab et al. 2023) laid out as the official checkpoints are, for FD_DINOv2.

torch-fidelity 0.4's DINOv2 extractor (`torch_fidelity/feature_extractor_dinov2.py`) builds its network with
`torch.hub.load("facebookresearch/dinov2", ...)`, which fetches the model code from GitHub at run time and
refuses a local weights file. Its preprocessing (TF-compatible bilinear resize to 224, ImageNet mean/std) and
output (the final-norm CLS token) are what dgm-eval uses (Stein et al. 2023), so ganbench keeps that class
and gives it this network, built here, with the manifest's weights file loaded by weights_only=True.

The architecture is the hub's `dinov2_vitl14` (facebookresearch/dinov2, dinov2/hub/backbones.py and
dinov2/models/vision_transformer.py): 14 px patches, width 1024, 24 blocks of 16 heads, MLP ratio 4 with exact
GELU, LayerNorm eps 1e-6, LayerScale (init 1.0), position embeddings for 518 px (37 x 37 patches + CLS) that
are resampled bicubically to the input's patch grid with the official +0.1 offset, and no register tokens:
304,368,640 parameters. Parameter names equal the official state dict's, so `dinov2_vitl14_pretrain.pth`
loads strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PATCH, WIDTH, DEPTH, HEADS, MLP_RATIO, NATIVE = 14, 1024, 24, 16, 4, 518


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, WIDTH, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, patches, width)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(WIDTH, MLP_RATIO * WIDTH)
        self.fc2 = nn.Linear(MLP_RATIO * WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(WIDTH, eps=1e-6), Attention(), LayerScale()
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(WIDTH, eps=1e-6), Mlp(), LayerScale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViTL14(nn.Module):
    """Images (already resized and normalised) -> the final-norm CLS token, 1024-d."""

    def __init__(self):
        super().__init__()
        grid = NATIVE // PATCH
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, WIDTH))
        self.mask_token = nn.Parameter(torch.zeros(1, WIDTH))  # used in training only; kept for strict loading
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)

    def init_random(self, generator: torch.Generator) -> None:
        """Seeded random weights at the official initialisation's scale (normal 0.02 for linear weights and
        position embeddings, CLS N(0, 1e-6), LayerScale 1): for stand-in weights files, never for scores."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=generator).clamp_(-2, 2) * 0.02)
                    m.bias.zero_()
                elif isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_((torch.rand(m.weight.shape, generator=generator) * 2 - 1) / math.sqrt(fan_in))
                    m.bias.zero_()
            self.pos_embed.copy_(torch.randn(self.pos_embed.shape, generator=generator).clamp_(-2, 2) * 0.02)
            self.cls_token.copy_(torch.randn(self.cls_token.shape, generator=generator) * 1e-6)

    def positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h x w input: the native 37 x 37 grid resampled bicubically by the scale
        factor (patches + 0.1) / 37, as the official code does (the offset avoids a rounding error)."""
        h0, w0 = h // PATCH, w // PATCH
        n = self.pos_embed.shape[1] - 1
        m = int(math.sqrt(n))
        if h0 == m and w0 == m:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, m, m, WIDTH).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic")
        if grid.shape[-2:] != (h0, w0):
            raise RuntimeError(f"position grid {tuple(grid.shape[-2:])} for {h0}x{w0} patches")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, WIDTH)
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.positions(h, w)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]
