"""The command reference (docs/cli.md) and the table of families (docs/families.md) say what the
code does. In cli.md every flag of ``pyro-vae train`` has its row and no row is for a flag that
is gone; a row names every name its option takes (the dataset, model, network, likelihood,
prior, guide, estimator registries and the fixed choices) and no name that none takes; a
default in backticks is the option's own; every dataset is described; the study table lists
the studies ``pyro-vae study`` offers, all and no other. In families.md the likelihood, prior,
guide, network and model rows are their registries', all and no other, and its estimator rows
are registered ones."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from pyro_vae.cli import parser
from pyro_vae.data import DATASETS
from pyro_vae.inference import ESTIMATORS
from pyro_vae.model import GUIDES, LIKELIHOODS, MODELS, NETWORKS, PRIORS
from pyro_vae.registry import Registry
from pyro_vae.studies import STUDIES
from pyro_vae.training import TrainConfig
from pyro_vae.training.options import options
from pyro_vae.training.schema import flag_of

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"[a-z][a-z0-9+-]*")  # how a registered name or a choice is spelled


def _section(page: str, heading: str) -> str:
    """The text of a page's section: from its ``## `` heading to the next one."""
    text = (DOCS / page).read_text()
    assert f"\n{heading}\n" in text, f"docs/{page} has no section {heading!r}"
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in ``text`` (headers and |---| rules left out)."""
    rule = re.compile(r"^\|[\s|:-]+\|$")
    lines = text.splitlines()
    return [
        [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        for i, line in enumerate(lines)
        if line.startswith("|")
        and not rule.match(line)
        and not (i + 1 < len(lines) and rule.match(lines[i + 1]))
    ]


def _names(text: str) -> set[str]:
    """The names in backticks in ``text`` (`mnist`, not `--dataset NAME` or `Trace_ELBO`)."""
    return {word for word in re.findall(r"`([^`]+)`", text) if NAME.fullmatch(word)}


def _differences(where: str, documented: list[str], code: list[str], what: str) -> str:
    """What a page's list and the code's disagree on, in words ('' when they agree)."""
    missing = [n for n in code if n not in documented]
    gone = [n for n in documented if n not in code]
    twice = sorted({n for n in documented if documented.count(n) > 1})
    return "; ".join(
        f"{where}: {words}: {names}"
        for words, names in (
            (f"{what} with no row (add it)", missing),
            (f"rows for {what} the code does not have (remove or rename them)", gone),
            ("rows given twice", twice),
        )
        if names
    )


def _train_rows() -> dict[str, list[str]]:
    """The option tables of ``pyro-vae train`` in cli.md: flag -> the row's cells."""
    rows = [r for r in _rows(_section("cli.md", "## `pyro-vae train`")) if r[0].startswith("`--")]
    flags = [r[0].strip("`").split()[0] for r in rows]
    twice = sorted({f for f in flags if flags.count(f) > 1})
    assert not twice, f"docs/cli.md: options with two rows: {twice}"
    return dict(zip(flags, rows, strict=True))


OPTIONS = {opt.flag or flag_of(name): (name, opt) for name, opt in options().items()}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
CHOOSING = sorted(flag for flag, (_, opt) in OPTIONS.items() if opt.choices is not None)
KNOWN_NAMES = {name for _, opt in OPTIONS.values() for name in opt.choice_names()}
KNOWN_NAMES |= {"cpu"}  # a value of --device, which takes cpu, cuda[:N] or auto


def _train_flags() -> set[str]:
    """The flags ``pyro-vae train --help`` offers: the training options, ``--resume`` and
    ``--overwrite``."""
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    train = commands.choices["train"]
    return {a.option_strings[-1] for a in train._actions if a.option_strings} - {"--help"}


def test_every_train_option_has_a_row_and_every_row_an_option():
    offered = _train_flags()
    assert set(OPTIONS) <= offered, sorted(set(OPTIONS) - offered)
    wrong = _differences(
        "docs/cli.md", list(_train_rows()), sorted(offered), "options of pyro-vae train"
    )
    assert not wrong, wrong


@pytest.mark.parametrize("flag", CHOOSING)
def test_a_row_names_every_choice_of_its_option(flag):
    """Every name the option takes is in its row (in backticks): the datasets in --dataset's,
    the models in --model's, each family's in its flag's."""
    _, opt = OPTIONS[flag]
    rows = _train_rows()
    assert flag in rows, f"docs/cli.md: {flag} has no row"
    row = " | ".join(rows[flag])
    missing = [c for c in opt.choice_names() if c not in _names(row)]
    registry = f"the {opt.choices.kind} registry" if isinstance(opt.choices, Registry) else "it"
    assert not missing, f"docs/cli.md: the row of {flag} leaves out {missing}, which {registry} has"


def test_the_option_tables_name_no_choice_that_is_gone():
    """A name in backticks in an option's row is a name some option takes (a registered family,
    a choice, ``auto``): a name that was renamed or removed fails here."""
    unknown = {
        flag: sorted(_names(" | ".join(row)) - KNOWN_NAMES) for flag, row in _train_rows().items()
    }
    unknown = {flag: names for flag, names in unknown.items() if names}
    assert not unknown, f"docs/cli.md: rows naming what no option takes: {unknown}"


def _same(documented: str, default: object) -> bool:
    typed = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
    try:
        return [float(w) for w in documented.split()] == [float(w) for w in typed.split()]
    except ValueError:
        return documented == typed


def test_a_default_in_backticks_is_the_options_default():
    """The default column, where it starts with a value in backticks, gives the value the
    option has when it is left out (``auto`` included)."""
    wrong = {}
    for flag, row in _train_rows().items():
        shown = re.match(r"`([^`]+)`", row[1])
        name, _ = OPTIONS.get(flag, (None, None))
        if shown and name and not _same(shown[1], DEFAULTS[name]):
            wrong[flag] = f"page {shown[1]!r}, code {DEFAULTS[name]!r}"
    assert not wrong, f"docs/cli.md: defaults that differ from the code's: {wrong}"


def test_every_dataset_is_described_under_data():
    """Each dataset has its words in the bullets under the Data table."""
    bullets = "\n".join(
        line
        for line in _section("cli.md", "## `pyro-vae train`")
        .split("\n### Data\n", 1)[1]
        .split("\n### ", 1)[0]
        .splitlines()
        if not line.startswith("|")
    )
    missing = [d for d in DATASETS if f"`{d}`" not in bullets]
    assert not missing, f"docs/cli.md: datasets with no words under ### Data: {missing}"


def test_the_study_table_lists_every_study_and_no_other():
    rows = _rows(_section("cli.md", "## `pyro-vae study NAME`"))
    documented = [r[0].strip("`") for r in rows]
    wrong = _differences("docs/cli.md", documented, STUDIES.names(), "studies of pyro-vae study")
    assert not wrong, wrong


def test_the_studies_page_lists_every_study_with_its_default_out():
    """docs/studies.md's table: one row per study, each with the ``--out`` its parser uses."""
    rows = _rows(_section("studies.md", "## How studies run"))
    documented = [r[0].strip("`") for r in rows]
    wrong = _differences("docs/studies.md", documented, STUDIES.names(), "studies")
    assert not wrong, wrong
    subcommands = next(a for a in parser()._actions if a.dest == "command").choices
    studies = next(a for a in subcommands["study"]._actions if a.dest == "study").choices
    for row in rows:
        out = next(a for a in studies[row[0].strip("`")]._actions if a.dest == "out")
        assert row[2] == f"`{out.default}`", f"docs/studies.md: {row[0]} writes to {out.default}"


FAMILIES = {
    "likelihood": LIKELIHOODS,
    "prior": PRIORS,
    "guide": GUIDES,
    "network": NETWORKS,
}


def _family_rows() -> list[list[str]]:
    return _rows(_section("families.md", "## The families"))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_families_table_lists_every_registered_part(family):
    documented = [r[1].strip("`") for r in _family_rows() if r[0] == family]
    registry = FAMILIES[family]
    wrong = _differences("docs/families.md", documented, registry.names(), f"{family}s")
    assert not wrong, wrong


def test_the_families_table_names_registered_models_and_estimators():
    rows = _family_rows()
    models = [
        m for r in rows if r[0] == "model" for m in re.findall(r"`--model ([a-z0-9-]+)", r[1])
    ]
    estimators = [r[1].strip("`") for r in rows if r[0] == "estimator"]
    wrong = _differences("docs/families.md", models, MODELS.names(), "models (--model NAME)")
    assert not wrong, wrong
    unregistered = [e for e in estimators if e not in ESTIMATORS]
    assert not unregistered, f"docs/families.md: estimators not registered: {unregistered}"
