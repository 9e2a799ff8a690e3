"""Regenerate the example outputs quoted in README.md by running the commands they quote.

Each quoted output sits in a ```text block right after a marker line
``<!-- output: NAME -->``; this script runs what NAME stands for and writes what it printed
into the block:

- ``default-run``: the README's first command, ``pyro-vae train --out runs/mnist-sample
  --overwrite`` (100 epochs, about a minute on two cores), with progress written as a log
  file gets it; the per-epoch lines in the middle are elided.
- ``tour``: the README's Python tour, run as a script in a scratch directory.

    python scripts/readme_outputs.py            # rewrite README.md
    python scripts/readme_outputs.py --check    # exit 1 if README.md would change

tests/test_readme.py checks the quoted outputs against the tool on every test run (the text
exactly, the numbers to the noise of a shorter run), so that they cannot drift.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- output: (?P<name>[\w-]+) -->\n```text\n)(?P<body>.*?)(```)", re.S)
EPOCHS_SHOWN = 2  # epoch lines kept at each end of the default run's log


def _run(command: list[str], cwd: Path, stderr: bool = True) -> str:
    """What ``command`` prints: stderr (progress), then stdout."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return (done.stderr if stderr else "") + done.stdout


def default_run(scratch: Path) -> str:
    """The first README command's output (progress on stderr, then the summary on stdout)."""
    command = ["pyro-vae", "train", "--out", "runs/mnist-sample", "--overwrite"]
    out = _run([sys.executable, "-m", "pyro_vae", *command[1:]], scratch)
    lines = out.splitlines()
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    keep = set(epochs[:EPOCHS_SHOWN] + epochs[-EPOCHS_SHOWN:])
    shown, elided = [f"$ {' '.join(command)}"], False
    for i, line in enumerate(lines):
        if line.startswith("train: ") and i < epochs[-1]:
            continue  # progress before the end: not an epoch, nothing to mark as left out
        if i in epochs and i not in keep:
            if not elided:
                shown.append("...")
            elided = True
            continue
        elided = False
        shown.append(line)
    return "\n".join(shown) + "\n"


def tour(scratch: Path) -> str:
    """What the README's Python example prints (on stdout: its runs' progress is not shown)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    script = scratch / "tour.py"
    script.write_text(blocks[0])
    return _run([sys.executable, str(script)], scratch, stderr=False)


OUTPUTS = {"default-run": default_run, "tour": tour}


def regenerate(text: str, scratch: Path) -> str:
    def replace(match: re.Match) -> str:
        body = OUTPUTS[match["name"]](scratch)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md would change")
    args = parser.parse_args()
    text = README.read_text()
    with tempfile.TemporaryDirectory() as scratch:
        new = regenerate(text, Path(scratch))
    if args.check:
        if new != text:
            print("README.md's quoted outputs differ from the tool's", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    print(f"rewrote {len(BLOCK.findall(new))} outputs in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
