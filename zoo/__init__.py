"""The zoo: every GAN family by name. Filled explicitly so nothing depends on import order.

Your own family is a plugin: a protocol entry names it `zoo: mypackage.module:MyFamily`, or a package
registers it under a short name in the `ganbench.zoo` entry-point group
(`[project.entry-points."ganbench.zoo"] mygan = "mypackage.module:MyFamily"`). Either way the class must
subclass zoo.base.GANModel (docs/contributing.md, docs/templates/family.py). Naming a module imports it,
which runs its code: name only packages you trust, as with any Python import.
"""

import importlib
from importlib import metadata

from bench.errors import BenchError
from bench.registry import Registry
from zoo.dcgan import DCGAN
from zoo.mlp_gan import MlpGAN
from zoo.mnist_gan import MnistGAN
from zoo.cdcgan import ConditionalDCGAN
from zoo.cyclegan import CycleGAN
from zoo.external import External
from zoo.pix2pix import Pix2Pix
from zoo.pix2pixhd import Pix2PixHD
from zoo.pix2pixhd_sem import Pix2PixHDSem
from zoo.progan import ProGAN
from zoo.sgan import SGAN
from zoo.stylegan import StyleGAN
from zoo.wgan import WGAN, WGANGP

ENTRY_POINT_GROUP = "ganbench.zoo"


def _plugin(name: str):
    """A family outside this package: `module:Class`, or a name in the ganbench.zoo entry-point group."""
    from zoo.base import GANModel

    target = name
    if ":" not in name:
        found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not found:
            return None  # not a plugin either: the registry's "unknown zoo entry" error follows
        target = found[0].value
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BenchError(f"zoo entry '{name}': cannot import {target} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, GANModel)):
        raise BenchError(f"zoo entry '{name}': {target} is not a GAN family (a subclass of zoo.base.GANModel)")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise BenchError(f"zoo entry '{name}': {target} does not implement {missing}")
    return cls


ZOO = Registry("zoo entry", {
    "mnist_gan": MnistGAN,
    "mlp_gan": MlpGAN,
    "dcgan": DCGAN,
    "cdcgan": ConditionalDCGAN,
    "wgan": WGAN,
    "wgan_gp": WGANGP,
    "sgan": SGAN,
    "pix2pix": Pix2Pix,
    "cyclegan": CycleGAN,
    "pix2pixhd": Pix2PixHD,
    "pix2pixhd_sem": Pix2PixHDSem,
    "progan": ProGAN,
    "stylegan": StyleGAN,
    "external": External,
}, resolve=_plugin)
