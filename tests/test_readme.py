"""The README's commands and the Python examples of the README and the manual are the ones
that work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    ci_lines = [
        ln
        for ln in (ROOT / ".ci" / "run").read_text().splitlines()
        if ln and not ln.startswith(("#", "set ", "cd "))
    ]
    assert len(ci_lines) == 1
    assert f"```bash\n{ci_lines[0]}\n```" in README


def _run_example(page: str, tmp_path: Path) -> str:
    """The page's one Python example, run as a script in a scratch directory."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)
    assert len(blocks) == 1, page
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


NUMBER = re.compile(r"-?\d[\d,]*(\.\d+)?(e-?\d+)?")


def _quoted(name: str) -> list[str]:
    """The lines of the README's quoted output NAME (scripts/readme_outputs.py writes them)."""
    block = re.search(rf"<!-- output: {name} -->\n```text\n(.*?)```", README, flags=re.S)
    assert block, name
    return [line for line in block.group(1).splitlines() if line != "..."]


def _skeleton(line: str) -> str:
    return NUMBER.sub("#", line)


def _numbers(line: str) -> list[float]:
    return [float(m.group(0).replace(",", "")) for m in NUMBER.finditer(line)]


def test_readme_default_run_output_is_what_the_tool_prints(tmp_path):
    """Every line quoted from the default run is a line the tool prints now (numbers aside);
    the reference check and the first epoch, which do not depend on --epochs, to float32's
    rounding: a sum of 100,000 float32 terms moves by an ulp from one CPU, or thread count, to
    another (70323.4922 on an EPYC, 70323.5000 on a Xeon)."""
    quoted = _quoted("default-run")
    assert quoted[0] == "$ pyro-vae train --out runs/mnist-sample --overwrite"
    args = ["train", "--out", "runs/mnist-sample", "--overwrite", "--epochs", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = (done.stderr + done.stdout).splitlines()
    shapes = {_skeleton(line) for line in printed}
    for line in quoted[1:]:
        assert _skeleton(line) in shapes, (
            f"the README quotes a line the tool no longer prints: {line}"
        )
    check = next(line for line in printed if line.startswith("reference check:"))
    quoted_check = next(line for line in quoted if line.startswith("reference check:"))
    assert _skeleton(check) == _skeleton(quoted_check)
    assert _numbers(check) == pytest.approx(_numbers(quoted_check), rel=1e-6)
    first = next(line for line in printed if line.startswith("epoch 1/"))
    quoted_first = next(line for line in quoted if line.startswith("epoch 1/"))
    # all but epochs and seconds: 32 steps from a sum an ulp apart, printed to 0.01
    assert _numbers(first)[2:-1] == pytest.approx(_numbers(quoted_first)[2:-1], abs=0.02)


def test_readme_python_example_runs(tmp_path):
    out = _run_example("README.md", tmp_path)
    quoted = _quoted("tour")
    assert [_skeleton(line) for line in out.splitlines()] == [_skeleton(line) for line in quoted]
    for line, said in zip(out.splitlines(), quoted, strict=True):  # seeded: same up to rounding
        assert _numbers(line) == pytest.approx(_numbers(said), rel=0.02, abs=0.2)
    losses = [float(v) for v in re.findall(r"-ELBO (-?[\d.]+) nats", out)]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert "Student-t prior, first step:" in out
    test_neg_elbo = float(re.search(r"test -ELBO after 3 epochs: ([\d.]+)", out).group(1))
    assert 100 < test_neg_elbo < 300  # trained (an untrained model scores ~540)
    elbo, log_px = map(float, re.search(r"ELBO (-[\d.]+) <= log p\(x\) (-[\d.]+)", out).groups())
    assert elbo < log_px < 0  # IWAE_500 is the tighter bound on the same images
    assert (tmp_path / "runs" / "tour" / "figures" / "latent_traversal.png").exists()


def test_manual_extensions_example_runs(tmp_path):
    out = _run_example("docs/families.md", tmp_path)
    for name in ("VampPrior", "IAF guide", "two-layer"):
        loss = float(re.search(rf"{name}: -IWAE_5 ([\d.]+) nats", out).group(1))
        assert 80 < loss < 300  # trained (an untrained model scores ~540)
    assert float(re.search(r"test -ELBO: ([\d.]+)", out).group(1)) < 600
    assert (tmp_path / "runs" / "nb-example" / "summary.json").exists()
