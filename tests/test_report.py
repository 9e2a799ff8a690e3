"""Figures, the HTML report, sample and the autoencoder, end to end on small runs."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile

import pytest
import torch

from pyro_vae import runs
from pyro_vae.cli import main
from pyro_vae.report import FIGURES, REPORT


@pytest.fixture(scope="module")
def z2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "z2"
    assert (
        main(
            [
                "train",
                "--z-dim",
                "2",
                "--epochs",
                "2",
                "--hidden",
                "64",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    return out


def test_every_figure_is_drawn(z2_run):
    for name, _ in FIGURES:
        assert (z2_run / runs.FIGURES / name).stat().st_size > 10_000, name


def test_report_is_one_self_contained_file(z2_run, capsys):
    assert main(["report", str(z2_run)]) == 0
    assert "report:" in capsys.readouterr().out
    page = (z2_run / REPORT).read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    assert page.count("<tr>") >= 2 + 20  # metrics rows + config rows
    assert "mean-field" in page and "Reference check" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(z2_run, tmp_path):
    main(["report", str(z2_run)])
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp()
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            (z2_run / REPORT).as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = torch.from_numpy(matplotlib.image.imread(shot))
    assert pixels.shape[:2] == (2000, 1280)
    assert float(pixels[..., :3].std()) > 0.1  # figures drawn, not a blank page


def test_sample_command(z2_run):
    out = z2_run / "s.png"
    assert main(["sample", str(z2_run), "--num", "12", "--out", str(out)]) == 0
    images = torch.load(out.with_suffix(".pt"))
    assert images.shape == (12, 784) and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert out.stat().st_size > 5_000


def test_autoencoder_trains_and_reports_no_rate(tmp_path):
    out = tmp_path / "ae"
    assert (
        main(
            [
                "train",
                "--autoencoder",
                "--epochs",
                "2",
                "--hidden",
                "64",
                "--z-dim",
                "4",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = runs.read_metrics(out / runs.METRICS)
    assert math.isnan(rows[-1]["test_rate"])  # a point mass has no KL to the prior
    assert rows[-1]["test_distortion"] < rows[0]["test_distortion"]
    assert main(["sample", str(out), "--num", "4"]) == 0
    assert main(["train", "--autoencoder", "--beta", "2", "--out", str(tmp_path / "x")]) == 2
