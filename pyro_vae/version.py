"""The version of pyro-vae (a leaf, so that any layer may say it)."""

__version__ = "0.2.0"
