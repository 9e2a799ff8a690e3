"""The estimator study on the user's own model: ``pyro-vae study estimators --model
MODULE:FACTORY`` and ``compare(model=..., plugins=...)`` train, measure (IS and AIS) and
tabulate a model built by a factory of the user's (a Student-t prior and a conv decoder), give
the study's sizes only where the factory takes them, record the module in every run, and say
in one line what is wrong with a bad ``--model`` or ``--set``."""

from __future__ import annotations

import json
import math
import sys
import uuid
from pathlib import Path

import pytest

from pyro_vae import LIKELIHOODS, MODELS, PRIORS, plugins
from pyro_vae.cli import main
from pyro_vae.inference.annealing import AnnealingSettings
from pyro_vae.studies.estimators import ESTIMATOR_SET, compare
from pyro_vae.training.schema import ConfigError

# {prior!r}: the name the prior is registered under (one no other test uses)
PARTS = '''
"""A Student-t prior and a conv decoder, built into a VAE by a factory."""
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import PRIORS, Prior, build_vae


@PRIORS.register({prior!r})
class StudentT(Prior):
    def __init__(self, z_dim, *, df: float = 4.0):
        super().__init__(z_dim)
        self.df = df
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self):
        return dist.StudentT(self.df, self.loc, 1.0).to_event(1)


class ConvDecoder(nn.Module):
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


class Encoder(nn.Module):
    def __init__(self, z_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 2 * z_dim))

    def forward(self, x):
        loc, log_scale = self.net(x).chunk(2, -1)
        return loc, log_scale.exp() + 1e-4


def make(data_shape, *, z_dim: int = 3, channels: int = 4):
    return build_vae(
        data_shape, z_dim=z_dim, prior={prior!r}, likelihood="continuous-bernoulli",
        encoder=Encoder(z_dim), decoder=ConvDecoder(z_dim, channels),
    )
'''

# one beta, two estimators, one epoch, a few samples on a few images: the shape of the study
SMALL = [
    "--epochs", "1", "--betas", "1", "--estimators", "trace_elbo", "iwae-k5",
    "--num-samples", "10", "--max-eval-images", "20", "--ais-steps", "5", "--no-progress",
]  # fmt: skip


class UserModule:
    """The user's module written to ``root`` under a name no other test uses."""

    def __init__(self, root: Path) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.root = root
        self.module = f"study_parts_{self.tag}"
        self.file = root / f"{self.module}.py"
        self.file.write_text(PARTS.format(prior=f"student-t-{self.tag}"))
        self.factory = f"{self.module}:make"


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """The module in a working directory; afterwards the registries hold what they held
    before, and the module and its record as a plug-in are forgotten."""
    registries = (LIKELIHOODS, PRIORS, MODELS)
    saved = [dict(r._entries) for r in registries]
    plugins._reset_for_tests()
    root = tmp_path_factory.mktemp("user-model")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield UserModule(root)
    plugins._reset_for_tests()
    for registry, entries in zip(registries, saved, strict=True):
        registry._entries.clear()
        registry._entries.update(entries)
    for module in [m for m in sys.modules if m.startswith("study_parts_")]:
        del sys.modules[module]


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "estimators.json").read_text())["rows"]


@pytest.mark.usefixtures("one_thread")
def test_the_study_measures_every_estimator_on_the_users_model(user_module, capsys):
    """From the command line: the factory's option by --set, the study's --z-dim (which the
    factory takes); a row per estimator with finite IS and AIS columns; every run records the
    module, and is read again only with the module named."""
    out = user_module.root / "study"
    argv = ["study", "estimators", "--model", user_module.factory, "--set", "channels=2"]
    assert main([*argv, "--z-dim", "2", *SMALL, "--out", str(out)]) == 0
    assert "| IWAE k=5 | 1 |" in capsys.readouterr().out
    rows = _rows(out)
    assert [r["estimator"] for r in rows] == ["Trace_ELBO", "IWAE k=5"]
    for r in rows:
        for key in ("test_log_likelihood", "test_log_likelihood_ais", "is_minus_ais"):
            assert math.isfinite(r[key]), (r["estimator"], key)
        assert r["z_dim"] == 2 and {r["rank_is"], r["rank_ais"]} <= {1, 2}
    saved = json.loads((out / "estimators.json").read_text())["config"]
    assert saved["model"] == user_module.factory and saved["channels"] == 2
    assert "hidden" not in saved  # the factory takes no hidden sizes: none were given
    for run in ("trace_elbo-beta1", "iwae-k5-beta1"):
        config = json.loads((out / run / "config.json").read_text())
        assert config["model"] == user_module.factory and config["hidden"] is None
        assert config["part_options"] == {"channels": 2} and config["z_dim"] == 2
        [record] = config["plugins"]
        assert record["module"] == user_module.module
        assert record["path"] == str(user_module.file.resolve()) and record["sha256"]
    # read by another command (as in a new process: nothing named yet)
    plugins._reset_for_tests()
    run = str(out / "iwae-k5-beta1")
    measure = ["--num-samples", "5", "--max-images", "10", "--no-progress"]
    assert main(["evaluate", run, *measure]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--plugin {user_module.module}" in err
    assert main(["evaluate", run, *measure, "--plugin", user_module.module]) == 0


@pytest.mark.usefixtures("one_thread")
def test_compare_from_python_on_the_users_file(user_module):
    """From Python, the module named as a file and the factory as FILE.py:make; a second call
    reuses the run and its evaluations."""
    kwargs = dict(
        epochs=1,
        betas=[1.0],
        estimators=[e for e in ESTIMATOR_SET if e.slug == "trace_elbo"],
        out=user_module.root / "from-python",
        num_samples=10,
        max_images=20,
        annealing=AnnealingSettings(num_steps=5),
        model=f"{user_module.file.name}:make",
        plugins=[user_module.file.name],
        z_dim=2,
        channels=2,
        progress=False,
    )
    [row] = compare(**kwargs)
    for key in ("test_log_likelihood", "test_log_likelihood_ais"):
        assert math.isfinite(row[key]), key
    checkpoint = user_module.root / "from-python" / "trace_elbo-beta1" / "checkpoint.safetensors"
    before = checkpoint.stat().st_mtime_ns
    assert compare(**kwargs) == [row]
    assert checkpoint.stat().st_mtime_ns == before


def test_options_that_do_not_apply_are_refused_before_training(user_module, tmp_path):
    kwargs = dict(epochs=1, betas=[1.0], estimators=ESTIMATOR_SET[:1], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="--hidden does not apply to --model"):
        compare(model=user_module.factory, hidden=(32,), **kwargs)
    with pytest.raises(ConfigError, match="--widths"):
        compare(model=user_module.factory, widths=3, **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--model", "no_such_module_here:make"], "no module named 'no_such_module_here'"),
        (["--model", "{module}:nothing"], "has no function 'nothing'"),
        (["--model", "not-a-model"], "unknown model 'not-a-model'"),
        (["--model", "{factory}", "--set", "beta=2"], "give it as --betas"),
        (["--model", "{factory}", "--set", "grad=dreg"], "each estimator sets it"),
        (["--model", "{factory}", "--hidden", "8"], "--hidden does not apply"),
        (["--model", "{factory}", "--set", "widths=[3]"], "--widths does not apply"),
    ],
)
def test_bad_model_input_is_one_line_and_status_2(user_module, tmp_path, capsys, argv, said):
    names = {"module": user_module.module, "factory": user_module.factory}
    argv = [a.format(**names) for a in argv]
    capsys.readouterr()
    status = main(["study", "estimators", *argv, "--epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("pyro-vae: error:") and said in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_set_that_is_not_name_equals_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["study", "estimators", "--set", "channels"])
    assert stopped.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_the_model_is_imported_before_parsing_after_debug_too(user_module):
    with pytest.raises(plugins.PluginError, match="no module named 'no_such_module_here'"):
        main(["--debug", "study", "estimators", "--model", "no_such_module_here:make"])
