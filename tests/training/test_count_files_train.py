"""Counts from the formats they come in (AnnData ``.h5ad``, a CSV table, an 8-bit ``.npy``)
train the count likelihoods end to end: the run records what it read, its first-batch
reference check holds, 8-bit counts stay counts, and Bernoulli is refused on counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from pyro_vae.cli import main
from pyro_vae.training import TrainConfig
from pyro_vae.training.assemble import assemble

anndata = pytest.importorskip("anndata")

CELLS, GENES = 400, 50
SMALL = ["--epochs", "1", "--hidden", "16", "--z-dim", "2", "--batch-size", "64", "--no-progress"]


def nb_counts(cells: int = CELLS, genes: int = GENES, seed: int = 0) -> np.ndarray:
    """Counts drawn from a known NB model: a 2-D latent code, softmax proportions, a library
    size per cell and an inverse dispersion per gene."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(cells, 2))
    logits = z @ rng.normal(size=(2, genes)) + rng.normal(size=genes)
    proportions = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mu = rng.lognormal(np.log(300), 0.3, size=(cells, 1)) * proportions
    theta = np.exp(rng.uniform(np.log(0.5), np.log(20), size=genes))
    x = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1  # every cell has a library size
    return x


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same counts as a sparse-X .h5ad, as a .h5ad whose X is normalised and whose counts
    are the ``counts`` layer, and as a CSV with cell ids and gene names."""
    base = tmp_path_factory.mktemp("counts")
    x = nb_counts()
    genes = pd.DataFrame(index=[f"gene{j}" for j in range(GENES)])
    anndata.AnnData(X=scipy.sparse.csr_matrix(x), var=genes).write_h5ad(base / "cells.h5ad")
    normalised = anndata.AnnData(X=np.log1p(x / x.sum(1, keepdims=True) * 1e4), var=genes)
    normalised.layers["counts"] = scipy.sparse.csr_matrix(x)
    normalised.write_h5ad(base / "layer.h5ad")
    table = pd.DataFrame(x.astype(np.int64), columns=genes.index)
    table.index = [f"cell{i}" for i in range(CELLS)]
    table.to_csv(base / "cells.csv")
    return base


RUNS = [
    ("poisson", "cells.h5ad", ["--library", "observed"]),
    ("negative-binomial", "cells.h5ad", ["--library", "observed"]),
    ("zero-inflated-negative-binomial", "cells.h5ad", ["--library", "observed"]),
    ("negative-binomial", "layer.h5ad", ["--data-key", "counts"]),
    ("zero-inflated-negative-binomial", "cells.csv", ["--library", "observed"]),
]


@pytest.mark.parametrize("likelihood, name, extra", RUNS, ids=[f"{r[0]}-{r[1]}" for r in RUNS])
def test_a_count_file_trains_and_records_its_counts(files, tmp_path, likelihood, name, extra):
    out = tmp_path / "run"
    args = ["train", "--data", str(files / name), "--likelihood", likelihood, *extra]
    assert main([*args, *SMALL, "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())["data_source"]
    assert record["format"] == ("table" if name.endswith(".csv") else "h5ad")
    assert record["shape"] == [GENES] and record["values"] == "counts"
    assert record["train"] + record["test"] == CELLS
    if "--data-key" in extra:
        assert record["layer"] == "counts"
    summary = json.loads((out / "summary.json").read_text())
    check = summary["reference_check"]
    assert check["check"] == "hand-written"
    assert check["pyro_loss"] == pytest.approx(check["reference_loss"], rel=1e-5)
    assert math.isfinite(summary["test_neg_elbo"]) and summary["test_neg_elbo"] > 0


def test_eight_bit_counts_are_not_divided_by_255(tmp_path):
    """uint8 values are counts to a count likelihood, intensities in [0, 1] to the others."""
    x = np.minimum(nb_counts(), 200).astype(np.uint8)
    np.save(tmp_path / "counts.npy", x)
    options = {"data": str(tmp_path / "counts.npy"), "hidden": (8,), "z_dim": 2}
    counts = assemble(TrainConfig(likelihood="poisson", out=str(tmp_path / "a"), **options))
    top = max(float(counts.data.train_x.max()), float(counts.data.test_x.max()))
    assert top == float(x.max()) > 1
    assert counts.run_data.record["values"] == "8-bit" and counts.run_data.scale is None
    grey = TrainConfig(likelihood="gaussian", binarize="none", out=str(tmp_path / "b"), **options)
    intensities = assemble(grey).data
    assert float(intensities.train_x.max()) <= 1.0
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["cells.h5ad", "cells.csv"])
def test_bernoulli_on_counts_is_refused_before_anything_is_written(files, tmp_path, capsys, name):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--data", str(files / name), *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--binarize" in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()
