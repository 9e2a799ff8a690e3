"""How long the command line takes to answer: ``pyro-vae --version``, ``pyro-vae train
--help`` and ``python -c "import pyro_vae"``, each a fresh process timed from start to exit
(wall clock), with ``python -c "import torch"`` beside them, the floor of any command that
needs torch. Rounds alternate the commands (and the trees, with ``--baseline-tree``), so that
a change in the machine's load falls on all of them alike; the medians are reported, with
the load average and the CPU share other processes used while it ran, and the machine (its
matmul peak measured first, in a child process of its own).

``--baseline-tree DIR`` times another checkout of the project (an earlier commit: ``git
worktree add /tmp/cli_before COMMIT``) side by side, each tree's package imported from the
tree itself (``PYTHONPATH``). ``--bytecode-cache`` lets the children keep compiled modules
(in a folder of their own, after a warm-up round), as an installed package does; without it
they run as the environment says (``PYTHONDONTWRITEBYTECODE``).

    python -m benchmarks.cli_startup --rounds 7
    python -m benchmarks.cli_startup --rounds 7 --baseline-tree /tmp/cli_before
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# (name, argv after the interpreter): the console script pyro-vae is `from pyro_vae.cli import
# main; sys.exit(main())`, run here by the same interpreter so that each tree is its own
ENTRY = "import sys; from pyro_vae.cli import main; sys.argv[0] = 'pyro-vae'; sys.exit(main())"
CASES = {
    "pyro-vae --version": ["-c", ENTRY, "--version"],
    "pyro-vae train --help": ["-c", ENTRY, "train", "--help"],
    'python -c "import pyro_vae"': ["-c", "import pyro_vae"],
    'python -c "import torch"': ["-c", "import torch"],
}
OUT = "benchmarks/results/cli_startup.json"
GOALS = {"pyro-vae --version": 0.3, "pyro-vae train --help": 2.0}  # seconds, on an idle machine
MACHINE = (
    "import json, torch; from benchmarks.machine import machine_block; "
    "print(json.dumps(machine_block(torch.device('cpu'))))"
)


def _busy_jiffies() -> int:
    """CPU time all processes have used since boot, in clock ticks (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _tree_env(tree: Path, pycache: Path | None) -> dict[str, str]:
    """The environment of a child that imports the package of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "80"}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _package_of(tree: Path, env: dict[str, str]) -> str:
    """Where a child started for ``tree`` finds pyro_vae: it must be the tree's own."""
    code = "import importlib.util; print(importlib.util.find_spec('pyro_vae').origin)"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree
    )
    origin = found.stdout.strip()
    if not origin.startswith(str(tree.resolve())):
        raise SystemExit(f"{tree}: pyro_vae is imported from {origin!r}, not from the tree")
    return origin


def _commit(tree: Path) -> str:
    """The tree's commit, with ``+changes`` where its working tree differs from it."""
    git = ["git", "-C", str(tree)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)  # fmt: skip
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def _machine() -> dict[str, Any]:
    """The machine block (:func:`benchmarks.machine.machine_block`: the CPU, its vector ISA,
    the BLAS, the matmul peak), measured before the timings in a child process, so that torch
    stays out of this one's memory."""
    done = subprocess.run(
        [sys.executable, "-c", MACHINE], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(done.stdout)


def _time(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from starting ``python ARGV`` to its exit; a failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        cwd=cwd,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} in {cwd} failed: {done.stderr.decode()[-2000:]}")
    return seconds


def measure(trees: dict[str, Path], rounds: int, bytecode_cache: bool) -> dict[str, Any]:
    """Medians over ``rounds`` fresh runs of each case in each tree, after one warm-up round
    (files read into the page cache, and compiled modules written where they are kept)."""
    with tempfile.TemporaryDirectory(prefix="pyro_vae_pycache_") as cache:
        envs = {
            name: _tree_env(tree, Path(cache) / name if bytecode_cache else None)
            for name, tree in trees.items()
        }
        packages = {name: _package_of(tree, envs[name]) for name, tree in trees.items()}
        for name, tree in trees.items():
            for argv in CASES.values():
                _time(argv, envs[name], tree)
        samples: dict[str, dict[str, list[float]]] = {n: {c: [] for c in CASES} for n in trees}
        load_before, busy, children = os.getloadavg(), _busy_jiffies(), _children_cpu()
        start = time.perf_counter()
        for _ in range(rounds):
            for case, argv in CASES.items():
                for name, tree in trees.items():
                    samples[name][case].append(_time(argv, envs[name], tree))
        wall = time.perf_counter() - start
        busy_seconds = (_busy_jiffies() - busy) / os.sysconf("SC_CLK_TCK")
        other = max(0.0, busy_seconds - (_children_cpu() - children))
    return {
        "trees": {
            name: {"path": str(tree), "commit": _commit(tree), "package": packages[name]}
            for name, tree in trees.items()
        },
        "seconds": {
            name: {
                case: {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "all": values,
                }
                for case, values in by_case.items()
            }
            for name, by_case in samples.items()
        },
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "other_cpu_share": other / (wall * (os.cpu_count() or 1)),
    }


def report_lines(result: dict[str, Any]) -> list[str]:
    """The medians as a Markdown table: a column per tree, the goals beside them; its caption
    names the machine."""
    from benchmarks.machine import machine_line  # (imports torch: after the timings)

    names = list(result["seconds"])
    head = ["command", *(f"{n} ({result['trees'][n]['commit']})" for n in names), "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in CASES:
        cells = [f"{result['seconds'][n][case]['median']:.2f} s" for n in names]
        goal = f"<= {GOALS[case]} s" if case in GOALS else ""
        lines.append(f"| `{case}` | " + " | ".join(cells) + f" | {goal} |")
    load = ", ".join(f"{v:.2f}" for v in result["loadavg_before"])
    lines.append(
        f"\nmedians of {result['rounds']} runs on {machine_line(result['machine'])}; load "
        f"average {load} before; other processes used {result['other_cpu_share']:.0%} of the "
        "CPUs meanwhile"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timed runs of each command (default 7)")
    p.add_argument("--tree", default=str(ROOT), help="the checkout to time (default: this one)")
    p.add_argument("--baseline-tree", default=None, metavar="DIR",
                   help="another checkout to time beside it (default: none)")  # fmt: skip
    p.add_argument(
        "--bytecode-cache",
        action="store_true",
        help="keep compiled modules between runs, as an installed package does",
    )
    p.add_argument("--out", default=OUT, help=f"the JSON report (default: {OUT})")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    trees = {"this": Path(args.tree).resolve()}
    if args.baseline_tree:
        trees = {"baseline": Path(args.baseline_tree).resolve(), **trees}
    machine = _machine()  # the matmul peak, before the timings
    result = {**machine, "command": shlex.join(["python", "-m", "benchmarks.cli_startup", *argv]),
              "rounds": args.rounds, "bytecode_cache": args.bytecode_cache,
              "pythondontwritebytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
              **measure(trees, args.rounds, args.bytecode_cache)}  # fmt: skip
    this = result["seconds"]["this"]
    result["met"] = {case: this[case]["median"] <= goal for case, goal in GOALS.items()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print("\n".join(report_lines(result)))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
