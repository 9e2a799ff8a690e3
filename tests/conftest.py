from __future__ import annotations

import os

import pyro
import pytest
import torch

from pyro_vae.data import ImageData, load_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs in two worker processes on two cores: one thread each, or their thread
    # pools wait on each other (subprocesses the tests start keep torch's default)
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Each test starts with an empty param store, validation on and a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def mnist_sample():
    return load_dataset("mnist-sample")


@pytest.fixture
def small_data(mnist_sample):
    """An eighth of mnist-sample's training images (500) and a fifth of its test images (200)."""
    d = mnist_sample
    return ImageData(d.train_x[::8], d.train_y[::8], d.test_x[::5], d.test_y[::5])


@pytest.fixture
def one_thread():
    """Tensors of a few hundred numbers: a second thread only adds waiting (much more of it on
    a busy machine). Modules of small tensors use it with ``pytest.mark.usefixtures``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
