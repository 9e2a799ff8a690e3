"""The Python API page (docs/api.md): its examples run on a trained run, ``encode`` and
``decode`` give what it says, and its likelihood table is the one the classes declare.

``python tests/test_api.py`` rewrites that table from the registry."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

import pyro
import pytest
import torch

import pyro_vae
from pyro_vae import LIKELIHOODS, build_model, build_vae

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "api.md"
TABLE_BEGIN = "<!-- likelihood table: begin (python tests/test_api.py rewrites it) -->"
TABLE_END = "<!-- likelihood table: end -->"
TABLE_HEAD = (
    '| likelihood | `vae.decoder(z)`, `vae.decode(z, kind="params")` | '
    "`vae.likelihood.mean`, `vae.decode(z)` |\n|---|---|---|\n"
)


def builtin_likelihoods() -> list[str]:
    """The likelihoods the package registers (tests may register more for a while)."""
    return [n for n in LIKELIHOODS if LIKELIHOODS.get(n).__module__.startswith("pyro_vae.")]


def likelihood_table() -> str:
    """The page's table, from each class's ``decoder_output`` and ``mean_output``."""
    rows = []
    for name in builtin_likelihoods():
        family = LIKELIHOODS.get(name)
        rows.append(f"| `{name}` | {family.decoder_output} | {family.mean_output} |\n")
    return TABLE_HEAD + "".join(rows)


def _documented_table() -> str:
    text = PAGE.read_text()
    assert TABLE_BEGIN in text and TABLE_END in text, "docs/api.md lost its table markers"
    return text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].lstrip("\n")


def rewrite_table() -> None:
    text = PAGE.read_text()
    before, rest = text.split(TABLE_BEGIN, 1)
    after = rest.split(TABLE_END, 1)[1]
    PAGE.write_text(f"{before}{TABLE_BEGIN}\n{likelihood_table()}{TABLE_END}{after}")


def test_every_likelihood_declares_what_its_decoder_returns():
    for name in builtin_likelihoods():
        family = LIKELIHOODS.get(name)
        for attribute in ("decoder_output", "mean_output"):
            text = vars(family).get(attribute)  # its own, not inherited from a base class
            assert isinstance(text, str) and text.strip(), f"{name} declares no {attribute}"
            assert "|" not in text and "\n" not in text, f"{name}.{attribute}: one table cell"


def _reachable(cls: type) -> bool:
    """A class of ours is reachable from ``pyro_vae`` or from ``pyro_vae.model`` /
    ``pyro_vae.inference``, under its own name; Pyro's classes are Pyro's to export."""
    if not cls.__module__.startswith("pyro_vae."):
        return True
    faces = (pyro_vae, pyro_vae.model, pyro_vae.inference)
    return any(getattr(face, cls.__name__, None) is cls for face in faces)


def test_every_registered_class_is_public():
    from pyro_vae.inference import ESTIMATORS, GeometricRamp, LinearRamp
    from pyro_vae.model import MODELS

    hidden = [
        f"estimator {n}: {type(ESTIMATORS.create(n)).__name__}"
        for n in ESTIMATORS
        if not _reachable(type(ESTIMATORS.create(n)))
    ]
    models = {n: typing.get_type_hints(MODELS.get(n))["return"] for n in MODELS}
    hidden += [f"model {n}: {cls.__name__}" for n, cls in models.items() if not _reachable(cls)]
    hidden += [c.__name__ for c in (GeometricRamp, LinearRamp) if not _reachable(c)]
    assert not hidden, hidden
    # the top-level face names every model class the registry builds
    assert all(getattr(pyro_vae, cls.__name__) is cls for cls in models.values())


def test_the_package_is_typed():
    assert (ROOT / "pyro_vae" / "py.typed").is_file()


def test_the_likelihood_table_is_the_registry():
    rows = [r for r in _documented_table().splitlines() if r.startswith("| `")]
    documented = {r.split(" | ")[0].strip("| `"): r for r in rows}
    assert sorted(documented) == sorted(builtin_likelihoods()), "a likelihood lacks a row"
    assert _documented_table() == likelihood_table(), (
        "docs/api.md's likelihood table is out of date: python tests/test_api.py"
    )


def _call(function) -> str:
    """``name(a, b=1, c="text")``: how the page writes a signature (no annotations)."""
    parts = []
    for p in inspect.signature(function).parameters.values():
        default = p.default
        if default is inspect.Parameter.empty:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={json.dumps(default) if isinstance(default, str) else default}")
    return f"{function.__name__}({', '.join(parts)})"


@pytest.mark.parametrize(
    "function",
    [pyro_vae.load_run, pyro_vae.evaluate_elbo, pyro_vae.log_likelihood, pyro_vae.evaluate_run],
    ids=lambda f: f.__name__,
)
def test_the_page_gives_the_functions_signatures(function):
    page = " ".join(PAGE.read_text().split())  # the page wraps long signatures
    assert f"`{_call(function)}`" in page, f"docs/api.md should show `{_call(function)}`"


def test_the_page_lists_every_field_of_a_loaded_run():
    page = PAGE.read_text()
    missing = [
        f.name for f in dataclasses.fields(pyro_vae.LoadedRun) if f"| `{f.name}` |" not in page
    ]
    assert not missing, f"docs/api.md's LoadedRun table lacks {missing}"


# --- the examples, on a run trained here ----------------------------------------------------


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A directory holding runs/z2, a tiny run like the one the page loads."""
    root = tmp_path_factory.mktemp("api")
    pyro_vae.train(epochs=1, hidden=(32,), z_dim=2, out=str(root / "runs" / "z2"), progress=False)
    return root


@pytest.fixture
def run(run_root):
    return pyro_vae.load_run(run_root / "runs" / "z2", device="cpu")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_documented_examples_run(run_root, monkeypatch):
    monkeypatch.chdir(run_root)
    blocks = _python_blocks()
    assert len(blocks) >= 5, "the page lost its examples"
    namespace: dict = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md, python block {i + 1}", "exec"), namespace)
    probs, samples = namespace["probs"], namespace["samples"]
    assert probs.shape == (8, 784) and 0 <= probs.min() and probs.max() <= 1
    assert samples.shape == (16, 784) and 0 <= samples.min() and samples.max() <= 1
    assert set(namespace["binary"].unique().tolist()) <= {0.0, 1.0}
    assert namespace["codes"].shape == (100, 8, 2)
    assert (run_root / "latent_grid.png").is_file()
    assert (run_root / "runs" / "z2" / "evaluation.json").is_file()


# --- encode, posterior and decode ---------------------------------------------------------


def test_encode_is_the_diagonal_guides_loc(run):
    x = run.test_x[:10]
    loc, scale = run.vae.encoder(x)
    torch.testing.assert_close(run.vae.encode(x), loc, rtol=0, atol=0)
    q = run.vae.posterior(x)
    assert q.batch_shape == (10,) and q.event_shape == (2,)
    torch.testing.assert_close(q.stddev, scale)
    assert not list(pyro.get_param_store().keys()), "encoding registered parameters"


def test_decode_gives_the_likelihoods_mean_and_for_bernoulli_the_probabilities(run):
    vae, z = run.vae, torch.randn(50, 2)
    out = vae.decoder(z)
    torch.testing.assert_close(vae.decode(z, kind="params"), out)
    mean = vae.decode(z)
    torch.testing.assert_close(mean, vae.likelihood.mean(out))
    torch.testing.assert_close(mean, torch.sigmoid(out))
    assert 0 <= mean.min() and mean.max() <= 1
    x = run.test_x[:50]
    torch.testing.assert_close(
        vae.decode(z, kind="distribution").log_prob(x), vae.likelihood(out).log_prob(x)
    )


@pytest.mark.parametrize("name", builtin_likelihoods())
def test_decode_kinds_for_every_likelihood(name):
    vae = build_vae((6,), likelihood=name, z_dim=2, hidden=(8,)).eval()
    z = torch.randn(5, 2)
    out = vae.decoder(z)
    assert vae.decode(z, kind="params").shape == (5, vae.likelihood.params_per_pixel * 6)
    torch.testing.assert_close(vae.decode(z), vae.likelihood.mean(out))
    assert vae.decode(z, kind="distribution").event_shape == (6,)


def test_decode_and_encode_refuse_what_they_cannot_take(run):
    vae = run.vae
    with pytest.raises(ValueError, match="kind must be"):
        vae.decode(torch.zeros(1, 2), kind="probs")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        vae.decode(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="one image") as refused:
        vae.encode(run.test_x[0])
    assert "\n" not in str(refused.value)  # its own line, not inside a Pyro trace dump


X = torch.bernoulli(torch.full((4, 784), 0.3))


@pytest.mark.parametrize(
    "options", [{"guide": "low-rank"}, {"autoencoder": True}, {"model": "two-layer"}]
)
def test_encode_is_the_encoders_loc_for_other_models(options):
    vae = build_model((1, 28, 28), z_dim=3, hidden=(16,), **options).eval()
    torch.testing.assert_close(vae.encode(X), vae.encoder(X)[0])
    z = torch.randn(2, 3)
    torch.testing.assert_close(vae.decode(z), vae.likelihood.mean(vae.decoder(z)))


def test_encode_refuses_a_guide_without_a_closed_form_mean():
    vae = build_vae((1, 28, 28), z_dim=3, hidden=(16,), guide="iaf").eval()
    with pytest.raises(ValueError, match="posterior_means"):
        vae.encode(X)
    assert vae.posterior(X).sample().shape == (4, 3)


def test_a_conditional_model_encodes_its_rows_and_decodes_only_with_a_context():
    vae = build_model((1, 28, 28), context_dim=10, context="label", z_dim=3, hidden=(16,)).eval()
    rows = torch.cat([X, torch.eye(10)[:4]], -1)
    torch.testing.assert_close(vae.encode(rows), vae.encoder(rows)[0])
    with pytest.raises(TypeError, match="context"):
        vae.decode(torch.zeros(4, 3))
    z, c = torch.randn(4, 3), torch.eye(10)[:4]
    out = vae.decoder(torch.cat([z, c], -1))
    torch.testing.assert_close(vae.decode(z, c, kind="params"), out)
    torch.testing.assert_close(vae.decode(z, c), vae.likelihood.mean(out))


if __name__ == "__main__":
    rewrite_table()
