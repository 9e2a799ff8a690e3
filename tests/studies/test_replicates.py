"""``--replicates K``: a study run K times with seeds SEED, ..., SEED+K-1, each replicate under
OUT/seed-SEED, and its tables over them as mean ± sd (sample sd) of each measure; K = 1 is the
study as it runs once."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pyro_vae import TrainConfig
from pyro_vae.cli import main
from pyro_vae.studies.beta_sweep import beta_sweep
from pyro_vae.studies.tables import Table, over_replicates, plus_minus, write_replicated
from pyro_vae.training import run_dir as runs

TINY = ["--epochs", "1", "--hidden", "32", "--z-dim", "4", "--betas", "1", "--no-progress"]
# the table's measure -> the replicate's own number in its run's evaluation.json
MEASURES = {"rate": "test_rate", "distortion": "test_distortion", "neg_elbo": "test_neg_elbo"}


def _sweep(out: Path, *more: str) -> int:
    return main(["study", "beta-sweep", *TINY, "--out", str(out), *more])


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    """beta-sweep with two replicates, seeds 3 and 4."""
    out = tmp_path_factory.mktemp("replicates") / "sweep"
    assert _sweep(out, "--seed", "3", "--replicates", "2") == 0
    return out


def test_the_table_gives_the_mean_and_sd_of_each_replicates_own_numbers(two):
    (row,) = json.loads((two / "beta_sweep.json").read_text())["rows"]
    runs_dirs = [two / f"seed-{seed}" / "beta1" for seed in (3, 4)]
    assert row["run"] == [str(d) for d in runs_dirs] and row["replicates"] == 2
    seeds = [json.loads((d / runs.CONFIG).read_text())["seed"] for d in runs_dirs]
    assert seeds == [3, 4]
    table = (two / "beta_sweep.md").read_text()
    for measure, key in MEASURES.items():
        own = [json.loads((d / runs.EVALUATION).read_text())[key] for d in runs_dirs]
        assert own[0] != own[1]  # two seeds, two different results
        mean, sd = statistics.fmean(own), statistics.stdev(own)
        assert row[f"{measure}_mean"] == pytest.approx(mean, rel=1e-12)
        assert row[measure] == row[f"{measure}_mean"]
        assert row[f"{measure}_sd"] == pytest.approx(sd, rel=1e-12)
        assert f" {mean:.2f} ± {sd:.2f} |" in table
    assert row["beta"] == 1.0 and "beta_sd" not in row  # a setting stays as it is
    assert "| 1 | " in table and "over 2 replicates, seeds 3, 4" in table
    config = json.loads((two / "beta_sweep.json").read_text())["config"]
    assert config["replicates"] == 2 and config["seeds"] == [3, 4]
    assert (two / "rate_distortion.png").stat().st_size > 10_000


def test_each_replicate_is_the_study_run_once_with_its_seed(two):
    """OUT/seed-SEED holds what the study writes with --seed SEED --out OUT/seed-SEED."""
    for seed in (3, 4):
        own = json.loads((two / f"seed-{seed}" / "beta_sweep.json").read_text())
        assert own["config"]["seed"] == seed and "replicates" not in own["rows"][0]
        assert (two / f"seed-{seed}" / "rate_distortion.png").exists()


def test_replicates_are_reused_as_single_runs_are(two, capsys):
    checkpoint = two / "seed-4" / "beta1" / runs.CHECKPOINT
    before = checkpoint.stat().st_mtime_ns, (two / "beta_sweep.json").read_text()
    capsys.readouterr()
    assert _sweep(two, "--seed", "3", "--replicates", "2") == 0
    assert (checkpoint.stat().st_mtime_ns, (two / "beta_sweep.json").read_text()) == before
    printed = capsys.readouterr()
    assert "over 2 replicates" in printed.out and printed.out.count("| beta |") == 1
    assert "finished before, reused" in printed.err


def test_one_replicate_writes_the_table_the_study_writes_by_itself(tmp_path):
    """--replicates 1 is the study as it was: the same layout and, byte for byte, the table
    its function writes when called directly."""
    assert _sweep(tmp_path / "cli", "--replicates", "1") == 0
    base = TrainConfig(epochs=1, hidden=(32,), z_dim=4, progress=False)
    beta_sweep(tmp_path / "direct", [1.0], base)
    cli, direct = (tmp_path / d for d in ("cli", "direct"))
    assert (cli / "beta_sweep.md").read_bytes() == (direct / "beta_sweep.md").read_bytes()
    a, b = (json.loads((d / "beta_sweep.json").read_text()) for d in (cli, direct))
    assert a["config"] == b["config"]
    assert [r | {"run": ""} for r in a["rows"]] == [r | {"run": ""} for r in b["rows"]]
    assert (cli / "beta1" / runs.SUMMARY).exists() and not (cli / "seed-0").exists()
    assert "±" not in (cli / "beta_sweep.md").read_text()


@pytest.mark.parametrize("name", ["handwritten", "semi-supervised"])
def test_a_study_that_repeats_over_its_own_seeds_refuses_replicates(name, tmp_path, capsys):
    assert main(["study", name, "--replicates", "2", "--out", str(tmp_path / "x")]) == 2
    assert "over its own --seeds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_replicates_must_be_at_least_one(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["study", "beta-sweep", "--replicates", "0"])
    assert stop.value.code == 2 and "--replicates: must be a finite number >= 1" in (
        capsys.readouterr().err
    )


def test_rows_over_replicates_keep_settings_and_merge_computed_cells(tmp_path):
    """A number that differs somewhere in its column is a measure (mean, sample sd), one that
    every replicate gives alike is a setting; a cell the study computes from what it saw (a
    difference from a reference row) is computed in each replicate, then merged."""
    replicates = [
        [{"beta": 1.0, "ll": -100.0, "se": 0.1, "au": 4, "run": "a"}, {"beta": 4.0, "ll": -90.0,
         "se": 0.1, "au": 3, "run": "b"}],
        [{"beta": 1.0, "ll": -104.0, "se": 0.3, "au": 4, "run": "c"}, {"beta": 4.0, "ll": -90.0,
         "se": 0.1, "au": 3, "run": "d"}],
    ]  # fmt: skip
    rows = over_replicates(replicates)
    assert rows[0]["beta"] == 1.0 and rows[0]["au"] == 4 and rows[0]["run"] == ["a", "c"]
    assert rows[0]["ll_mean"] == -102.0 and rows[0]["ll_sd"] == pytest.approx(2 * 2**0.5)
    assert rows[1]["ll_mean"] == -90.0 and rows[1]["ll_sd"] == 0.0  # a measure in every row
    assert "au_sd" not in rows[0] and "beta_sd" not in rows[0]

    def gain(reference: dict):
        return lambda r: f"{r['ll'] - reference['ll']:+.2f}"

    tables = [
        Table("t", {"seed": seed}, reps, f"seed {seed}; nats", [
            ("beta", "beta", "g"), ("", "ll", plus_minus("ll", "se")),
            ("", "vs beta=1", gain(reps[0])), ("au", "au", ""),
        ])
        for seed, reps in zip((0, 1), replicates, strict=True)
    ]  # fmt: skip
    merged, text = write_replicated(tmp_path, tables, [0, 1])
    assert merged == rows
    assert "seed 0/1; nats" in text
    assert "| 1 | -102.00 ± 2.83 | +0.00 ± 0.00 | 4 |" in text
    assert "| 4 | -90.00 ± 0.00 | +12.00 ± 2.83 | 3 |" in text
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["config"] == {"seed": [0, 1], "replicates": 2, "seeds": [0, 1]}
