"""The user's model in the whole pipeline, from Python: ``pyro_vae.train(vae=...)`` with a VAE
that rewrites its model, ``train(model="FILE.py:FACTORY")`` and ``plugins=[...]``; the run read
back with ``load_run(dir, vae=...)`` or ``load_run(dir, plugins=[...])`` and refused, in one
line, without them or when edited to name another module; bad programs and options refused
before a run directory exists; beta (fixed or warmed up) reaching a rewritten model's latent
sites as it trains."""

from __future__ import annotations

import json
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.poutine.messenger import Messenger
from user_parts_source import EVIL, StudentTVAE, student_t_vae, workspace

import pyro_vae
from pyro_vae.model.program_check import ProgramError
from pyro_vae.plugins import PluginError
from pyro_vae.training import run_dir as runs
from pyro_vae.training.run_dir import RunDirectoryError
from pyro_vae.training.schema import ConfigError

QUICK = dict(epochs=1, batch_size=250, progress=False, tensorboard=False)


@pytest.fixture
def place(tmp_path, monkeypatch):
    """The working directory, with the user's modules written under names of their own; what
    they register and import is forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    with workspace(tmp_path) as ws:
        yield ws


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


# --- a VAE given from Python ------------------------------------------------------------------


def test_a_given_vae_that_rewrites_its_model_trains_and_is_read_back_with_it(tmp_path, small_data):
    out = tmp_path / "given"
    result = pyro_vae.train(data=small_data, vae=student_t_vae(), out=str(out), **QUICK)
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["model"] == "given" and config["plugins"] == []
    assert config["binarize"] == "dynamic"  # its likelihood is bernoulli
    check = result.summary["reference_check"]
    assert check["check"] == "pyro" and check["no_hand_written"]
    assert check["step_loss"] == pytest.approx(check["pyro_loss"], rel=1e-4)
    loaded = pyro_vae.load_run(out, data=small_data, vae=student_t_vae())
    assert isinstance(loaded.vae, StudentTVAE) and loaded.epoch == 1
    _same_weights(loaded.vae, result.vae)
    fresh = student_t_vae()
    with pytest.raises(AssertionError):
        _same_weights(fresh, result.vae)  # (the weights were replaced by the run's)
    with pytest.raises(RunDirectoryError) as error:
        pyro_vae.load_run(out, data=small_data)
    assert "load_run(run_dir, vae=...)" in _one_line(error)


def test_a_factory_model_trains_from_python_and_is_read_back_with_its_module(place, small_data):
    parts = place.parts()
    result = pyro_vae.train(
        data=small_data,
        model=f"{parts}:make",
        plugins=[parts],
        channels=3,
        z_dim=2,
        out="factory",
        **QUICK,
    )
    config = json.loads((place.root / "factory" / runs.CONFIG).read_text())
    assert config["model"] == f"{parts}:make" and config["part_options"] == {"channels": 3}
    assert [r["spec"] for r in config["plugins"]] == [parts]
    place.forget()
    with pytest.raises(PluginError) as error:
        pyro_vae.load_run("factory", data=small_data)
    assert _one_line(error).endswith(f"(plugins=[{parts!r}])")
    loaded = pyro_vae.load_run("factory", data=small_data, plugins=[parts])
    _same_weights(loaded.vae, result.vae)
    assert loaded.vae.decoder.channels == 3


def test_a_factorys_own_default_holds_where_a_declared_option_is_not_given(place, small_data):
    """make(..., z_dim=4): the run's z_dim is the factory's 4, not the option's default 16,
    unless z_dim is given."""
    parts = place.parts()
    own = pyro_vae.train(data=small_data, model=f"{parts}:make", plugins=[parts], out="own",
                         **QUICK)  # fmt: skip
    assert own.vae.z_dim == 4
    assert json.loads((place.root / "own" / runs.CONFIG).read_text())["z_dim"] == 4
    given = pyro_vae.train(data=small_data, model=f"{parts}:make", z_dim=3, out="given",
                           **QUICK)  # fmt: skip
    assert given.vae.z_dim == 3


def test_a_plugins_parts_train_from_python_with_their_options(place, small_data):
    parts = place.parts()
    result = pyro_vae.train(
        data=small_data,
        plugins=[parts],
        likelihood=place.likelihood,
        df=5.0,
        scale=0.2,
        prior="student-t",
        prior_df=6.0,
        hidden=(16,),
        z_dim=2,
        out="lik",
        **QUICK,
    )
    config = json.loads((place.root / "lik" / runs.CONFIG).read_text())
    assert config["part_options"] == {"df": 5.0, "scale": 0.2, "prior_df": 6.0}
    assert (result.vae.likelihood.df, result.vae.likelihood.scale) == (5.0, 0.2)
    assert result.vae.prior.df == 6.0
    place.forget()
    with pytest.raises(PluginError, match=rf"\(plugins=\[{parts!r}\]\)$"):
        pyro_vae.load_run("lik", data=small_data)
    loaded = pyro_vae.load_run("lik", data=small_data, plugins=[parts])
    assert (loaded.vae.likelihood.df, loaded.vae.prior.df) == (5.0, 6.0)
    _same_weights(loaded.vae, result.vae)


# --- a run directory never chooses what code runs --------------------------------------------


def test_load_run_never_imports_a_module_the_run_was_edited_to_name(place, small_data, monkeypatch):
    parts = place.parts()
    pyro_vae.train(
        data=small_data, model=f"{parts}:make", plugins=[parts], z_dim=2, out="run", **QUICK
    )
    evil = place.name("evil")
    (place.root / f"{evil}.py").write_text(EVIL)
    monkeypatch.syspath_prepend(str(place.root))
    config = json.loads((place.root / "run" / runs.CONFIG).read_text())
    original = dict(config, plugins=list(config["plugins"]))
    record = dict(config["plugins"][0], spec=evil, module=evil, kind="module", sha256=None)
    for edited in (
        dict(original, model=f"{evil}:make"),
        dict(original, model=f"{evil}:make", plugins=[*original["plugins"], record]),
        dict(original, plugins=[record]),
    ):
        (place.root / "run" / runs.CONFIG).write_text(json.dumps(edited))
        for named in ([], [parts]):
            place.forget()
            with pytest.raises(PluginError) as error:
                pyro_vae.load_run("run", data=small_data, plugins=named)
            _one_line(error)
            with pytest.raises(PluginError):
                pyro_vae.load_run("run", data=small_data, plugins=named, vae=student_t_vae())
            assert not (place.root / "IMPORTED").exists()
            assert evil not in sys.modules
    with pytest.raises(
        RunDirectoryError, match="cannot resume: this run was made with the plug-in"
    ):
        pyro_vae.train(resume=True, out="run", plugins=[parts], epochs=2, progress=False)
    assert not (place.root / "IMPORTED").exists()


# --- bad input: one line, and no run directory ------------------------------------------------


class Unplated(StudentTVAE):
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
        pyro.sample("x", self.likelihood(self.decoder(z)).to_event(1), obs=x)


class LatentOutside(StudentTVAE):
    def model(self, x):
        shift = pyro.sample("shift", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z) + shift), obs=x)

    def guide(self, x):
        pyro.sample("shift", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        return super().guide(x)


class GuideMissesALatent(StudentTVAE):
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            w = pyro.sample("w", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z + w)), obs=x)


@pytest.mark.parametrize(
    "cls,error,needle",
    [
        (Unplated, ProgramError, "the observed site 'x' is not inside pyro.plate('data'"),
        (LatentOutside, ProgramError, "the latent site 'shift' of the model is outside"),
        (GuideMissesALatent, ProgramError, "does not sample the model's latent site(s) ['w']"),
    ],
)
def test_a_given_program_the_objectives_cannot_train_is_refused(
    tmp_path, small_data, cls, error, needle
):
    base = student_t_vae()
    vae = cls(base.encoder, base.decoder, base.likelihood, base.prior)
    with pytest.raises(error) as raised:
        pyro_vae.train(data=small_data, vae=vae, out=str(tmp_path / "run"), **QUICK)
    assert needle in _one_line(raised)
    assert not (tmp_path / "run").exists()


def _bad(place, case: str) -> tuple[dict, type[Exception], str]:
    parts = place.parts()
    if case == "plugin raises on import":
        broken = place.parts("broken", tail="raise RuntimeError('no licence server')\n")
        return {"plugins": [broken]}, PluginError, "RuntimeError: no licence server"
    if case == "no such factory":
        return {"model": f"{parts}:missing_name"}, PluginError, "no function 'missing_name'"
    if case == "factory returns a list":
        listed = place.parts(
            "listed",
            tail="def as_list(data_shape, *, z_dim: int = 2):\n"
            "    return [make(data_shape, z_dim=z_dim)]\n",
        )
        return {"model": f"{listed}:as_list"}, ConfigError, "returned a list, not a pyro_vae"
    if case == "option without its part":
        return {"plugins": [parts], "df": 5.0}, ConfigError, "--df does not apply"
    if case == "clash with a built-in":
        clash = place.write(
            "clash",
            "from pyro_vae import LIKELIHOODS, Likelihood\n\n"
            "LIKELIHOODS.register('bernoulli')(type('Mine', (Likelihood,), {}))\n",
        )
        return {"plugins": [clash]}, PluginError, "likelihood 'bernoulli' is registered already"
    if case == "not a VAE":
        return {"vae": [student_t_vae()]}, TypeError, "vae= takes a pyro_vae.VAE"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "plugin raises on import",
        "no such factory",
        "factory returns a list",
        "option without its part",
        "clash with a built-in",
        "not a VAE",
    ],
)
def test_bad_input_from_python_is_one_line_and_makes_no_run_directory(place, small_data, case):
    options, error, needle = _bad(place, case)
    with pytest.raises(error) as raised:
        pyro_vae.train(data=small_data, out="run", z_dim=2, **options, **QUICK)
    assert needle in _one_line(raised)
    assert not (place.root / "run").exists()


# --- beta reaches the latent sites of a rewritten model as it trains --------------------------


class _Scales(Messenger):
    """Notes the scale each sample site ends with (after every handler around it)."""

    def __init__(self, seen: dict[str, set[float]]) -> None:
        super().__init__()
        self.seen = seen

    def _postprocess_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not msg["name"].startswith("_"):
            scale = msg["scale"]
            value = float(scale) if not torch.is_tensor(scale) else float(scale.detach())
            key = "observed" if msg["is_observed"] else "latent"
            self.seen.setdefault(key, set()).add(value if msg["mask"] is not False else 0.0)


class Watched(StudentTVAE):
    """The rewritten model, its sites' final scales noted while it trains."""

    seen: dict[str, set[float]]

    def model(self, x):
        with _Scales(self.seen):
            return super().model(x)


def test_a_rewritten_model_trains_at_beta_4_and_its_latents_are_weighted_by_4(tmp_path, small_data):
    base = student_t_vae()
    vae = Watched(base.encoder, base.decoder, base.likelihood, base.prior)
    vae.seen = {}
    result = pyro_vae.train(data=small_data, vae=vae, beta=4.0, out=str(tmp_path / "run"), **QUICK)
    rows = runs.read_metrics(tmp_path / "run" / runs.METRICS)
    assert [r["beta"] for r in rows] == [4.0]
    assert json.loads((tmp_path / "run" / runs.CONFIG).read_text())["beta"] == 4.0
    assert 4.0 in vae.seen["latent"]  # the steps' traces
    assert vae.seen["latent"] <= {4.0, 1.0}  # 1: the evaluation's plain bound
    assert vae.seen["observed"] == {1.0}
    assert result.summary["reference_check"]["check"] == "pyro"


def test_kl_warmup_ramps_beta_of_a_factory_model(place, small_data):
    parts = place.parts()
    # 500 images in batches of 250: 2 steps an epoch, all of the first epoch's warm-up
    result = pyro_vae.train(
        data=small_data,
        model=f"{parts}:make",
        plugins=[parts],
        z_dim=2,
        kl_warmup_epochs=1,
        out="run",
        **(QUICK | {"epochs": 2}),
    )
    betas = [r["beta"] for r in runs.read_metrics(place.root / "run" / runs.METRICS)]
    assert betas == [0.5, 1.0]
    assert [r["beta"] for r in result.metrics] == betas


def test_kl_warmup_ramps_beta_of_a_rewritten_model_from_zero(tmp_path, small_data):
    base = student_t_vae()
    vae = Watched(base.encoder, base.decoder, base.likelihood, base.prior)
    vae.seen = {}
    pyro_vae.train(
        data=small_data,
        vae=vae,
        kl_warmup_epochs=1,
        out=str(tmp_path / "run"),
        **(QUICK | {"epochs": 2}),
    )
    betas = [r["beta"] for r in runs.read_metrics(tmp_path / "run" / runs.METRICS)]
    assert betas == [0.5, 1.0]
    assert {0.0, 0.5} <= vae.seen["latent"]  # masked at the first step, then half
    assert vae.seen["observed"] == {1.0}


@pytest.mark.parametrize(
    "estimator,against",
    [("iwae", "the IWAE bound from Pyro's traces"), ("renyi", "the Renyi bound (alpha 0.5)")],
)
def test_a_factory_model_trains_with_an_importance_weighted_bound(
    place, small_data, estimator, against
):
    """The first-batch check builds Pyro's importance-weighted bound with the model's own plate
    nesting (an estimator with vectorised particles counts its particle plate besides)."""
    parts = place.parts()
    result = pyro_vae.train(
        data=small_data,
        model=f"{parts}:make",
        plugins=[parts],
        z_dim=2,
        estimator=estimator,
        particles=5,
        out="run",
        **QUICK,
    )
    check = result.summary["reference_check"]
    assert check["check"] == "pyro" and check["against"].startswith(against)
    assert check["step_loss"] == pytest.approx(check["pyro_loss"], rel=1e-4)
