"""Bits per dimension: a probability mass over 256 levels reads in bits directly; a density on
[0, 1] pays the 8 bits per value of the change of variables to [0, 256)."""

from __future__ import annotations

import math

import pytest

from pyro_vae.inference.bits import bits_per_dim


def test_a_mass_reads_in_bits_directly():
    # one bit per value: P(x) = 2^-784
    assert bits_per_dim(784 * math.log(2), 784, discrete=True) == pytest.approx(1.0, rel=1e-15)
    # the uniform mass over the 256 levels: 8 bits per value
    assert bits_per_dim(784 * math.log(256), 784, True) == pytest.approx(8.0, rel=1e-15)
    assert bits_per_dim(543.21, 784, True) == pytest.approx(543.21 / 784 / math.log(2))


def test_a_density_adds_ln_256_per_value():
    """nats + D ln 256: the uniform density on [0, 1] (-log p = 0) is the uniform mass's 8 bits."""
    assert bits_per_dim(0.0, 784, discrete=False) == pytest.approx(8.0, rel=1e-15)
    for nats in [-1500.0, 0.0, 87.5, 2000.0]:
        offset = bits_per_dim(nats, 3072, False) - bits_per_dim(nats, 3072, True)
        assert offset == pytest.approx(8.0, rel=1e-12)
        expected = (nats + 3072 * math.log(256)) / (3072 * math.log(2))
        assert bits_per_dim(nats, 3072, False) == pytest.approx(expected, rel=1e-12)


def test_no_values_is_refused():
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(1.0, 0, True)
