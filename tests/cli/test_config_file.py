"""``--config FILE``: options read from TOML, YAML or JSON (a run's config.json too) are the
flags' defaults, checked by the same declarations; a flag overrides the file; a bad file is
one line naming the file and the key, exit 2, before anything is written."""

from __future__ import annotations

import json

import pytest

from pyro_vae.cli import main, parser
from pyro_vae.cli.config_file import read_config_file

TINY = ["--epochs", "1", "--hidden", "16", "--z-dim", "2", "--batch-size", "100",
        "--no-progress", "--no-tensorboard", "--skip-reference-check"]  # fmt: skip


def _print_config(capsys, *argv: str) -> str:
    assert main(["train", *argv, "--print-config"]) == 0
    return capsys.readouterr().out


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae: error: ") and "\n" not in err
    return err


def test_print_config_round_trips_and_flags_override_the_file(tmp_path, capsys):
    """What --print-config writes is a valid --config: read back, it prints the same file;
    a flag beside it wins; options that do not apply are left out."""
    text = _print_config(capsys, "--likelihood", "gaussian", "--sigma", "0.3", "--lr", "0.002")
    assert "[model]" in text and "sigma = 0.3" in text and "lr = 0.002" in text
    assert "free_bits" not in text  # the mean-field estimator does not take it
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert _print_config(capsys, "--config", str(path)) == text
    again = _print_config(capsys, "--config", str(path), "--sigma", "0.5")
    assert "sigma = 0.5" in again and "sigma = 0.3" not in again


def test_yaml_and_flat_keys_with_dashes(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("batch-size: 64\nlikelihood: gaussian\nhidden: [32, 16]\n")
    text = _print_config(capsys, "--config", str(path))
    assert "batch_size = 64" in text and "hidden = [32, 16]" in text
    assert 'likelihood = "gaussian"' in text


def test_a_runs_own_config_json_is_a_config(tmp_path, capsys):
    """Trained once, the run's config.json reproduces its options (not its directory)."""
    first = tmp_path / "first"
    assert main(["train", *TINY, "--seed", "3", "--lr", "0.003", "--out", str(first)]) == 0
    capsys.readouterr()
    text = _print_config(capsys, "--config", str(first / "config.json"))
    assert "seed = 3" in text and "lr = 0.003" in text and str(first) not in text
    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(second)]) == 0
    one, two = (json.loads((d / "config.json").read_text()) for d in (first, second))
    assert {k: v for k, v in one.items() if k != "out"} == {
        k: v for k, v in two.items() if k != "out"
    }
    assert (json.loads((first / "summary.json").read_text())["test_neg_elbo"]
            == json.loads((second / "summary.json").read_text())["test_neg_elbo"])  # fmt: skip


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        ("epochs = 'ten'\n", ".toml", "run.toml: epochs: is an integer, not 'ten'"),
        (
            "epoch = 3\n",
            ".toml",
            "run.toml: epoch: unknown option for pyro-vae train (did you mean 'epochs'?)",
        ),  # fmt: skip
        ("[model]\nlr = 0.1\n", ".toml", "run.toml: lr: belongs under [run], not [model]"),
        ("likelihood = 'gausian'\n", ".toml", "unknown likelihood 'gausian'"),
        ("sigma = 0.5\n", ".toml", "run.toml: sigma: --sigma does not apply to --model vae"),
        ("lr = -0.1\n", ".toml", "run.toml: lr: --lr must be > 0, got -0.1"),
        ("epochs = [\n", ".toml", "run.toml: not valid TOML"),
        ("{", ".json", "run.json: not valid JSON"),
        ("- 1\n", ".yaml", "run.yaml: a config file is a table of options, not a list"),
        ("overwrite = true\n", ".toml", "give --overwrite on the command line, not in a file"),
        (
            "[search]\nlr = {low = 0.001, high = 0.01}\n",
            ".toml",
            "run.toml: search: a [search] table is for pyro-vae tune",
        ),
        ("epochs = 1\n", ".ini", "run.ini: a config file is .toml, .yaml, .yml or .json"),
    ],
)
def test_a_bad_file_is_one_line_with_the_file_and_the_key(tmp_path, capsys, content, suffix,
                                                          message):  # fmt: skip
    path = tmp_path / f"run{suffix}"
    path.write_text(content)
    out = tmp_path / "never"
    err = _error(capsys, ["train", "--config", str(path), *TINY, "--out", str(out)])
    assert message in err
    assert not out.exists()  # nothing written before the options passed


def test_a_missing_file_is_one_line(tmp_path, capsys):
    err = _error(capsys, ["train", "--config", str(tmp_path / "none.toml")])
    assert "none.toml: cannot read the config file" in err


def test_every_command_takes_a_config(tmp_path, capsys):
    """evaluate, sample, report and each study read their own options from a file the same
    way (a study's table of its own flags)."""
    for command in (["evaluate", "RUN"], ["sample", "RUN"], ["report", "RUN"],
                    ["study", "beta-sweep"]):  # fmt: skip
        args = parser().parse_args([*command, "--config", "x.toml"])
        assert args.config == "x.toml"
    path = tmp_path / "sample.toml"
    path.write_text("num = 0\n")
    err = _error(capsys, ["sample", str(tmp_path), "--config", str(path)])
    assert "--num must be in [1, 10000], got 0" in err
    path.write_text("num = 'many'\n")
    err = _error(capsys, ["sample", str(tmp_path), "--config", str(path)])
    assert "sample.toml: num: is an integer, not 'many'" in err


def test_group_tables_and_the_search_table_are_read_apart(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("epochs = 2\n[model]\nz_dim = 4\n[search]\nlr = {low = 1e-4, high = 1e-2}\n")
    file = read_config_file(path, sections=("search",))
    assert file.values == {"epochs": 2, "z_dim": 4}
    assert file.sections["search"] == {"lr": {"low": 1e-4, "high": 1e-2}}
