"""The closed-form linear-Gaussian model the tests measure estimators against."""

from pyro_vae.checks.linear_gaussian import LinearGaussian

__all__ = ["LinearGaussian"]
