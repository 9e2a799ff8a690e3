"""The command line's help tells the truth: every option of every command and study (and of the
benchmark and the fault-injection harness beside the package) has words
and shows the default the parser really uses, choices stay out of the usage line, and
``pyro-vae --help`` is short."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

import pytest
from fault_injection import __main__ as fault_injection_main

from benchmarks import compare
from pyro_vae import __version__
from pyro_vae.cli import COMMANDS, main, parser
from pyro_vae.studies import STUDIES
from pyro_vae.training import TrainConfig, options

COLUMNS = 80


@pytest.fixture(autouse=True)
def _terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", str(COLUMNS))  # help wraps as in an 80-column terminal


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """``pyro-vae``, each command and each study, by the command line that shows its help."""
    found = []

    def walk(name: str, p: argparse.ArgumentParser) -> None:
        found.append((name, p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child_name, child in action.choices.items():
                    walk(f"{name} {child_name}", child)

    walk("pyro-vae", parser())
    # the tools beside the package: the benchmark and the fault-injection harness
    walk("python -m benchmarks.compare", compare.parser())
    walk("python -m tests.fault_injection", fault_injection_main.parser())
    return found


PARSERS = _parsers()
OPTIONS = [
    pytest.param(p, a, id=f"{name} {a.option_strings[-1]}")
    for name, p in PARSERS
    for a in p._actions
    if a.option_strings
]


def _typed(value: object) -> str:
    """A value as it is typed on the command line: a sequence as its items."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _help_of(p: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The entry of ``action`` in ``p``'s help as the command line shows it, on one line."""
    formatter = p.formatter_class(prog=p.prog, width=10_000)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def _has_value(action: argparse.Action) -> bool:
    """An option that takes a value and has one when left out (not a flag, not None)."""
    return (
        action.nargs != 0
        and action.default is not None
        and action.default is not argparse.SUPPRESS
        and _typed(action.default) != ""
    )


def test_the_walk_reaches_every_command_and_every_study():
    names = {name for name, _ in PARSERS}
    assert {f"pyro-vae {c}" for c in COMMANDS} <= names
    assert {f"pyro-vae study {s}" for s in STUDIES} <= names
    assert len(OPTIONS) > 100


@pytest.mark.parametrize("p, action", OPTIONS)
def test_every_option_has_words_and_its_true_default(p, action):
    assert action.help and action.help.strip() and action.help is not argparse.SUPPRESS
    shown = _help_of(p, action)
    if _has_value(action):
        want = f"(default: {_typed(action.default)})"
        assert want in shown, f"{shown!r} does not show the default {want!r}"
        # the formatter adds it; words of the option's own that state it would drift
        typed = re.escape(_typed(action.default))
        assert not re.search(rf"default|\({typed}\)", action.help), action.help
    # no second, hand-written default beside the true one, and none on a flag
    assert shown.count("(default:") <= (1 if action.nargs != 0 else 0), shown


@pytest.mark.parametrize("name, opt", list(options().items()), ids=list(options()))
def test_train_shows_the_defaults_of_the_config(name, opt):
    """``train``'s flags default to None (to tell given options from left-out ones); their
    help shows the config's own defaults."""
    train = dict(PARSERS)["pyro-vae train"]
    action = next(a for a in train._actions if a.dest == name)
    default = TrainConfig.__dataclass_fields__[name].default
    shown = _help_of(train, action)
    if default is not None and not isinstance(default, bool):
        assert f"(default: {_typed(default)})" in shown, shown


@pytest.mark.parametrize("name, p", PARSERS, ids=[name for name, _ in PARSERS])
def test_choices_have_no_spaces_and_stay_out_of_the_usage_line(name, p):
    for action in p._actions:
        if action.choices is None:
            continue
        spaced = [c for c in action.choices if re.search(r"\s", str(c))]
        assert not spaced, f"{name} {action.dest}: choices with spaces {spaced}"
        if action.option_strings:
            assert action.metavar, f"{name} {action.option_strings[-1]}: choices without metavar"
            for choice in action.choices:
                assert str(choice) in _help_of(p, action)
    too_long = [line for line in p.format_usage().splitlines() if len(line) > COLUMNS]
    assert not too_long, too_long


@pytest.mark.parametrize("name, p", PARSERS, ids=[name for name, _ in PARSERS])
def test_every_command_and_study_is_listed_with_words(name, p):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._get_subactions()}
            assert set(listed) == set(action.choices)
            assert all(h and h.strip() for h in listed.values()), listed


def _run_help(*argv: str) -> list[str]:
    env = {**os.environ, "COLUMNS": str(COLUMNS)}
    cmd = [sys.executable, "-m", "pyro_vae", *argv, "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_top_level_help_is_short_and_names_each_command_on_one_line():
    lines = _run_help()
    assert len(lines) < 25, "\n".join(lines)
    top = dict(PARSERS)["pyro-vae"]
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {a.dest: a.help for a in commands._get_subactions()}
    assert set(listed) == set(COMMANDS)
    for command, words in listed.items():
        one_line = rf"\s+{command}\s+{re.escape(words)}$"
        assert [line for line in lines if re.match(one_line, line)], "\n".join(lines)


def test_the_study_help_lists_each_study_with_its_summary():
    lines = _run_help("study")
    text = " ".join(" ".join(lines).split())
    for name in STUDIES:
        assert [line for line in lines if re.match(rf"\s+{name}(\s|$)", line)], name
        assert f"{name} {STUDIES.get(name).summary}" in text, name
    assert len(lines) < 2 * len(list(STUDIES)) + 15


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyro-vae {__version__}"
