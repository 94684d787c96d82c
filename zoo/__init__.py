"""The zoo: every GAN family by name. Filled explicitly so nothing depends on import order."""

from bench.registry import Registry
from zoo.dcgan import DCGAN
from zoo.mnist_gan import MnistGAN

ZOO = Registry("zoo entry", {
    "mnist_gan": MnistGAN,
    "dcgan": DCGAN,
})
