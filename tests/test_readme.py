"""The README's commands and the Python examples of the README and the manual are the ones
that work."""

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


def test_readme_python_example_runs(tmp_path):
    out = _run_example("README.md", tmp_path)
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
