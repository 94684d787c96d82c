"""ganbench: train a zoo of GANs with one runner and score them with fingerprinted protocols."""

__version__ = "0.1.0"
