"""<Family name> (<authors> <year>, "<title>", <venue>; <reference repository>): one paragraph on what the
paper's networks and losses are, with the numbers this file uses and where each comes from.

Copy to zoo/<family>.py, rename, and add one line to the registry in zoo/__init__.py:
    "<family>": <Family>,
Nothing else changes: the runner, checkpointing, evaluation and reports ask the contract in zoo/base.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.base import Recipe, TwoPlayerGAN, trace_shapes
from zoo.layers import dcgan_init


@dataclass(frozen=True)
class Config(Recipe):
    """The paper's defaults; every field is a protocol config key (checked, unknown keys refused)."""

    latent_dim: int = 64
    width: int = 128


class TemplateGAN(TwoPlayerGAN):
    family = "template_gan"  # the registry name
    seed_section = "<authors> <year>, <short title> (<venue>), §<section>; <reference repository>"
    summary = "one line: what G and D are and which loss"
    Config = Config
    # Declare what else it can do by inheriting from zoo.base: Translator / CycleTranslator (image-to-image),
    # StyleSampler (mapping + synthesize), Classifier (classify). Override requires() for auxiliary networks
    # ("vgg19", "segmenter"), figures() for family figures, extra_state() for state beyond modules/optimisers.

    def __init__(self, cfg: Config, data, device="cpu"):
        super().__init__(cfg, data, device)
        size = data.channels * data.resolution ** 2
        self.G = nn.Sequential(nn.Linear(cfg.latent_dim, cfg.width), nn.ReLU(), nn.Linear(cfg.width, size), nn.Tanh(),
                               nn.Unflatten(1, (data.channels, data.resolution, data.resolution)))
        self.D = nn.Sequential(nn.Flatten(), nn.Linear(size, cfg.width), nn.LeakyReLU(0.2), nn.Linear(cfg.width, 1))
        dcgan_init(self.G)
        dcgan_init(self.D)
        self.build_optimizers()  # the recipe's optimiser, learning rates and betas

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    @property
    def resolution(self) -> int:
        return self.data.resolution

    def inspect(self):
        return {"G": trace_shapes(self.G, torch.zeros(1, self.cfg.latent_dim)),
                "D": trace_shapes(self.D, torch.zeros(1, self.data.channels, self.data.resolution, self.data.resolution))}
