"""``pyro-vae study count-recovery --data PATH``: the count families on a file of the user's,
measured by what needs no known truth, with the truth-based columns said to be left out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse

from pyro_vae.cli import main
from pyro_vae.studies.count_recovery import FAMILIES

anndata = pytest.importorskip("anndata")

TINY = ["--epochs", "1", "--num-samples", "4", "--hidden", "8", "--z-dim", "2"]


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """120 cells x 12 genes of overdispersed counts, the raw counts in the ``counts`` layer
    and normalised values in X."""
    rng = np.random.default_rng(0)
    mu = rng.lognormal(np.log(20), 0.5, size=(120, 12))
    x = rng.poisson(rng.gamma(2.0, mu / 2.0)).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1
    adata = anndata.AnnData(X=np.log1p(x))
    adata.layers["counts"] = scipy.sparse.csr_matrix(x)
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def test_the_study_on_a_file_reports_held_out_fit_without_truth(cells, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "count-recovery", "--data", str(cells), "--data-key", "counts"]
    assert main([*args, *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no known truth" in printed and "latent R²" in printed
    table = json.loads((out / "count_recovery.json").read_text())
    assert [r["model"] for r in table["rows"]] == list(FAMILIES)  # no "true model" row
    for row in table["rows"]:
        assert math.isfinite(row["log_px"]) and math.isfinite(row["test_neg_elbo"])
        assert row["log_px"] > -row["test_neg_elbo"] - 1e-3  # IS bound above the ELBO
        assert "latent_r2" not in row and "log_theta_correlation" not in row
    nb = {r["model"]: r for r in table["rows"]}["negative-binomial"]
    assert nb["theta_median"] > 0 and len(nb["theta"]) == 12
    config = table["config"]
    assert config["data_key"] == "counts" and "latent R²" in config["left_out"]
    source = config["data_source"]
    assert source["format"] == "h5ad" and source["values"] == "counts" and source["shape"] == [12]
    assert (out / "count_recovery.png").stat().st_size > 5_000
    assert "latent R²" not in (out / "count_recovery.md").read_text().split("\n\n", 1)[1]
    # a second call reuses every run and measures nothing again
    capsys.readouterr()
    assert main([*args, *TINY, "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("finished before, reused") == len(FAMILIES)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data", "/nonexistent/cells.h5ad"], "does not exist"),
        (["--data-key", "counts"], "give the file"),
    ],
)
def test_bad_data_is_refused_in_one_line_before_out_is_made(tmp_path, capsys, args, needle):
    out = tmp_path / "study"
    assert main(["study", "count-recovery", *args, *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not out.exists()
