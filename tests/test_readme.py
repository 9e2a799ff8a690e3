"""The README's commands and example are the ones that work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def _run_block(index: int, tmp_path: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) == 2
    script = tmp_path / f"example{index}.py"
    script.write_text(blocks[index])
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_python_example_runs(tmp_path):
    out = _run_block(0, tmp_path)
    losses = [float(v) for v in re.findall(r"-ELBO (-?[\d.]+) nats", out)]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert "Student-t prior, first step:" in out


def test_readme_extensions_example_runs(tmp_path):
    out = _run_block(1, tmp_path)
    for name in ("VampPrior", "IAF guide", "two-layer"):
        loss = float(re.search(rf"{name}: -IWAE_5 ([\d.]+) nats", out).group(1))
        assert 80 < loss < 300  # trained (an untrained model scores ~540)
    assert float(re.search(r"test -ELBO: ([\d.]+)", out).group(1)) < 600
    assert (tmp_path / "runs" / "nb-example" / "summary.json").exists()
