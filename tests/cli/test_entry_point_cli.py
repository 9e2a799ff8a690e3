"""An installed package's parts reach the command line with no flag: its entry point in the
group ``pyro_vae.plugins`` is imported before the parser is built, so its names are choices,
its options are flags, and a run made with it is read back without ``--plugin``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = """
import pyro.distributions as dist
import torch
from pyro_vae import PRIORS, Prior


@PRIORS.register("laplace-prior-ep")
class LaplacePrior(Prior):
    def __init__(self, z_dim, *, laplace_width: float = 1.0):
        super().__init__(z_dim)
        self.width = laplace_width
        self.register_buffer("zeros", torch.zeros(z_dim))

    def forward(self):
        return dist.Laplace(self.zeros, self.width).to_event(1)
"""


def _installed(tmp_path: Path) -> dict[str, str]:
    """A distribution 'ep-demo' on a path of its own, declaring one entry point; the
    environment of a process that has it installed."""
    site = tmp_path / "site"
    info = site / "ep_demo-2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-demo\nVersion: 2.3\n")
    (info / "entry_points.txt").write_text("[pyro_vae.plugins]\nlaplace = ep_demo_parts\n")
    (site / "ep_demo_parts.py").write_text(PACKAGE)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_an_installed_plugin_is_a_choice_a_flag_and_reads_back_without_naming(tmp_path):
    env = _installed(tmp_path)
    shown = _cli(["train", "--help"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "laplace-prior-ep" in shown.stdout and "--laplace-width" in shown.stdout
    out = tmp_path / "run"
    trained = _cli(
        ["train", "--prior", "laplace-prior-ep", "--laplace-width", "0.5", "--epochs", "1",
         "--z-dim", "2", "--hidden", "16", "--batch-size", "500", "--no-progress",
         "--no-tensorboard", "--out", str(out)],
        env, tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["part_options"] == {"laplace_width": 0.5}
    (record,) = config["plugins"]
    assert record["kind"] == "entry-point" and record["version"] == "2.3"
    read = _cli(["evaluate", str(out), "--num-samples", "5", "--max-images", "10",
                 "--no-progress"], env, tmp_path)  # fmt: skip
    assert read.returncode == 0, read.stderr
    # the same run where the package is not installed: refused in one line, nothing imported
    bare = {**os.environ}
    refused = _cli(["evaluate", str(out), "--num-samples", "5", "--no-progress"], bare, tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "ep-demo" in line or "laplace" in line, line
