"""The zoo: every GAN family by name. Filled explicitly so nothing depends on import order."""

from bench.registry import Registry
from zoo.dcgan import DCGAN
from zoo.mlp_gan import MlpGAN
from zoo.mnist_gan import MnistGAN
from zoo.cyclegan import CycleGAN
from zoo.pix2pix import Pix2Pix
from zoo.pix2pixhd import Pix2PixHD
from zoo.pix2pixhd_sem import Pix2PixHDSem
from zoo.progan import ProGAN
from zoo.sgan import SGAN
from zoo.stylegan import StyleGAN
from zoo.wgan import WGAN, WGANGP

ZOO = Registry("zoo entry", {
    "mnist_gan": MnistGAN,
    "mlp_gan": MlpGAN,
    "dcgan": DCGAN,
    "wgan": WGAN,
    "wgan_gp": WGANGP,
    "sgan": SGAN,
    "pix2pix": Pix2Pix,
    "cyclegan": CycleGAN,
    "pix2pixhd": Pix2PixHD,
    "pix2pixhd_sem": Pix2PixHDSem,
    "progan": ProGAN,
    "stylegan": StyleGAN,
})
