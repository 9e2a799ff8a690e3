"""A user's module of parts, as the tests of "your model in the whole pipeline" write it into a
working directory: a Student-t prior and a Student-t likelihood registered by name, each with
options of its own, a conv decoder and a factory that builds a VAE from them; besides, a VAE
subclass that rewrites ``model``, and a :class:`Workspace` that writes such modules under names
no other test uses and forgets, afterwards, what they registered and imported."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyro_vae
from pyro_vae import VAE, plugins

# {prior} and {likelihood}: the names the parts are registered under
PARTS = '''
"""A user's own parts: a Student-t prior, a Student-t likelihood, and a conv VAE factory."""
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import LIKELIHOODS, PRIORS, Likelihood, Prior, build_vae
from pyro_vae.model.likelihoods import DataSupportError


@PRIORS.register({prior!r})
class StudentTPrior(Prior):
    def __init__(self, z_dim, *, prior_df: float = 4.0):
        super().__init__(z_dim)
        self.df = float(prior_df)
        self.register_buffer("zeros", torch.zeros(z_dim))

    def forward(self):
        return dist.StudentT(self.df, self.zeros, 1.0).to_event(1)


@LIKELIHOODS.register({likelihood!r})
class StudentTPixels(Likelihood):
    data_kind = "real"

    def __init__(self, data_dim, *, df: float = 3.0, scale: float = 0.1):
        super().__init__(data_dim)
        if not (df > 0 and scale > 0):
            raise ValueError(f"{likelihood} needs df > 0 and scale > 0, got {{df}}, {{scale}}")
        self.df, self.scale = float(df), float(scale)

    def forward(self, out, x=None):
        return dist.StudentT(self.df, out, self.scale).to_event(1)

    def mean(self, out, x=None):
        return out

    def check_data(self, x):
        super().check_data(x)
        if x.abs().max() > 100:
            raise DataSupportError("{likelihood} reads pixels within [-100, 100]")


class ConvDecoder(nn.Module):
    """z (N, z_dim) -> (N, 784): a linear map to (C, 7, 7), then two transposed convolutions
    up to 28 x 28."""

    def __init__(self, z_dim, channels):
        super().__init__()
        self.channels = channels
        self.fc = nn.Linear(z_dim, channels * 7 * 7)
        self.up = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, 1, 4, 2, 1),
        )

    def forward(self, z):
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, self.channels, 7, 7)
        return self.up(h).reshape(*lead, 784)


class MLPEncoder(nn.Module):
    def __init__(self, z_dim, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, -1)
        return loc, log_scale.exp() + 1e-4


def make(data_shape, *, z_dim: int = 4, channels: int = 4, prior_df: float = 4.0):
    return build_vae(
        data_shape,
        z_dim=z_dim,
        prior={prior!r},
        prior_df=prior_df,
        encoder=MLPEncoder(z_dim),
        decoder=ConvDecoder(z_dim, channels),
    )
{tail}'''

# a module that notes it was imported: what no command may import because a run names it
EVIL = "open('IMPORTED', 'w').close()\n\ndef make(data_shape, **options):\n    raise SystemExit\n"


def parts_source(prior: str = "student-t", likelihood: str = "student-t-px", tail: str = "") -> str:
    """The user's module, its parts registered as ``prior`` and ``likelihood``."""
    return PARTS.format(prior=prior, likelihood=likelihood, tail=textwrap.dedent(tail))


class Workspace:
    """A working directory for the user's modules, each under a name no other test uses
    (``tag``: the names of another workspace, whose runs this one reads)."""

    def __init__(self, root: Path, tag: str | None = None) -> None:
        self.root = root
        self.tag = tag or uuid.uuid4().hex[:8]
        self.likelihood = f"student-t-px-{self.tag}"
        self._entries = {id(r): (r, dict(r._entries)) for r in plugins._registries()}

    def name(self, stem: str) -> str:
        return f"{stem}_{self.tag}"

    def write(self, stem: str, source: str) -> str:
        """``source`` as ROOT/STEM_TAG.py; the file's name, as ``--plugin`` takes it."""
        file = f"{self.name(stem)}.py"
        (self.root / file).write_text(source)
        return file

    def parts(self, stem: str = "parts", *, prior: str = "student-t", tail: str = "") -> str:
        """The user's module of parts (:data:`PARTS`), its likelihood named :attr:`likelihood`."""
        return self.write(stem, parts_source(prior, self.likelihood, tail))

    def forget(self) -> None:
        """As a new process would be: no plug-in loaded, the user's modules not imported, the
        registries as they were when this workspace was made."""
        plugins._reset_for_tests()
        for registry, entries in self._entries.values():
            registry._entries.clear()
            registry._entries.update(entries)
        for module in [m for m in sys.modules if self.tag in m]:
            del sys.modules[module]


@contextlib.contextmanager
def workspace(root: Path, tag: str | None = None) -> Iterator[Workspace]:
    """A :class:`Workspace` in ``root`` (``tag``: as :class:`Workspace` takes it), forgotten
    afterwards (:meth:`Workspace.forget`)."""
    plugins._reset_for_tests()
    here = Workspace(root, tag)
    try:
        yield here
    finally:
        here.forget()


class StudentTVAE(VAE):
    """The README's VAE that writes its own generative story: a Student-t prior, the latent
    site left unweighted (beta reaches it through the handler :class:`~pyro_vae.VAE` puts
    around a rewritten model)."""

    df = 4.0

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(self.z_dim)
            z = pyro.sample("z", dist.StudentT(self.df, zeros, 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)
        return z


class SmallEncoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, -1)
        return loc, log_scale.exp() + 1e-4


def student_t_vae(z_dim: int = 3, likelihood: str = "bernoulli", **options) -> StudentTVAE:
    """A small :class:`StudentTVAE` (an MLP 784-16-z both ways) with ``likelihood``."""
    torch.manual_seed(1)
    base = pyro_vae.build_vae(
        (1, 28, 28), likelihood=likelihood, z_dim=z_dim, hidden=(16,), **options
    )
    return StudentTVAE(base.encoder, base.decoder, base.likelihood, base.prior)


# --- the command line in a subprocess ------------------------------------------------------

PACKAGE_PARENT = Path(pyro_vae.__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """This package first on the path, unbuffered output, and this process's torch thread
    count (runs are compared bit for bit; some CPUs' sums depend on the threads)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def command(*args: str) -> list[str]:
    """``python -m pyro_vae ARGS``."""
    return [sys.executable, "-m", "pyro_vae", *args]


def run_command(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pyro_vae ARGS`` in ``cwd``, its output captured."""
    return subprocess.run(
        command(*args),
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def files_and_times(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``directory``: its modification time (ns) and bytes."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


__all__ = [
    "EVIL",
    "PARTS",
    "StudentTVAE",
    "Workspace",
    "command",
    "copy_run",
    "files_and_times",
    "parts_source",
    "run_command",
    "student_t_vae",
    "subprocess_env",
    "workspace",
]
