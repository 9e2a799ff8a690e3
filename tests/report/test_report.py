"""Figures, the HTML report, sample and the autoencoder, end to end on small runs."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile

import pytest
import torch
from support import trained_run

from pyro_vae.cli import main
from pyro_vae.report import FIGURES, REPORT
from pyro_vae.training import run_dir as runs


@pytest.fixture(scope="module")
def z2_run(tmp_path_factory):
    return trained_run(tmp_path_factory.mktemp("report") / "z2", "--z-dim", "2")


def test_every_figure_is_drawn(z2_run):
    for name, _ in FIGURES:
        assert (z2_run / runs.FIGURES / name).stat().st_size > 10_000, name


def test_figures_show_what_their_captions_say(z2_run, tmp_path, monkeypatch):
    """The tensors handed to each plot are the model's: reconstructions decode the posterior
    mean, samples decode prior draws, the map shows the posterior means, the traversal decodes
    the 5%-95% quantile grid, the interpolation runs between two encoded test images."""
    from pyro_vae import active_units, load_run, posterior_means
    from pyro_vae.report import make_figures, plots

    shown: dict[str, list] = {}
    for name in ("reconstructions", "samples", "latent_map", "image_grid", "kl_per_dimension"):
        real = getattr(plots, name)

        def record(*args, _name=name, _real=real, **kw):
            shown.setdefault(_name, []).append(args)
            return _real(*args, **kw)

        monkeypatch.setattr(plots, name, record)
    run = load_run(z2_run, "cpu")
    vae, x, y = run.vae, run.test_x, run.data.test_y
    metrics = runs.read_metrics(z2_run / runs.METRICS)
    make_figures(vae, x, y, run.data.shape, metrics, tmp_path)

    def decode(z):
        return vae.likelihood.mean(vae.decoder(z))

    with torch.no_grad():
        inputs, recons = shown["reconstructions"][0][:2]
        assert inputs.shape == (30, 784) and torch.equal(inputs, x[_picked(x, 30)])
        torch.testing.assert_close(recons, decode(vae.encoder(inputs)[0]))
        torch.manual_seed(0)
        torch.testing.assert_close(shown["samples"][0][0], vae.sample(100))
        codes, labels = shown["latent_map"][0][:2]
        torch.testing.assert_close(codes, posterior_means(vae.guide, x))
        assert torch.equal(labels, y)
        grid, _, steps = shown["image_grid"][0][:3]
        q = torch.quantile(codes, torch.tensor([0.05, 0.95]), dim=0)
        assert steps == 15 and grid.shape == (225, 784)
        torch.testing.assert_close(grid[0], decode(torch.stack([q[0, 0], q[1, 1]])))  # top left
        torch.testing.assert_close(grid[-1], decode(torch.stack([q[1, 0], q[0, 1]])))
        rows = shown["image_grid"][1][0].reshape(5, 10, 784)  # x_a, 8 decoded codes, x_b
        a, b = rows[0, 0], rows[0, -1]
        za, zb = posterior_means(vae.guide, torch.stack([a, b]))
        torch.testing.assert_close(rows[0, 1], decode(za))
        torch.testing.assert_close(rows[0, 8], decode(zb))
        torch.testing.assert_close(rows[0, 4], decode(za + 3 / 7 * (zb - za)))
        kl, activity = shown["kl_per_dimension"][0][:2]
        torch.testing.assert_close(activity, active_units(vae.guide, x)[1])
        assert kl.shape == (2,) and bool((kl > 0).all())


def _picked(x: torch.Tensor, n: int) -> torch.Tensor:
    """The evenly spaced test images the reconstruction figure shows."""
    return torch.linspace(0, x.shape[0] - 1, n).long()


def test_report_is_one_self_contained_file(z2_run, capsys):
    assert main(["report", str(z2_run)]) == 0
    assert "report:" in capsys.readouterr().out
    page = (z2_run / REPORT).read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    assert page.count("<tr>") >= 2 + 20  # metrics rows + config rows
    assert "mean-field" in page and "Reference check" in page
    # config.json records the options that do not apply as null: the page has no row for them
    recorded = json.loads((z2_run / runs.CONFIG).read_text())
    options = page[page.index("<h2>Configuration") :]
    for name, value in recorded.items():
        if name in ("part_options", "plugins"):  # records, with a row per entry (none here)
            assert value in ({}, []) and f"<td>{name}</td>" not in options
            continue
        if name == "data_source":  # the record of the user's data, a "source" row (none here:
            assert value == {} and "<td>source</td>" not in options  # a built-in set)
            continue
        # (a row's first cell is its group, one of which is named "data" as an option is)
        row = re.search(rf"<tr><td>\w+</td><td>{re.escape(name)}</td>", options) is not None
        assert row == (value is not None and name != "progress") or name == "particles", name
    assert ">None<" not in options


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


@pytest.mark.parametrize("num, rows", [(16, 2), (25, 3), (10, 1), (3, 1)])
def test_sample_draws_every_image_in_the_grid(z2_run, tmp_path, monkeypatch, num, rows):
    """`pyro-vae sample --num N` shows all N images (the last row partly blank), not the
    full rows only."""
    from pyro_vae.cli import main
    from pyro_vae.report import plots

    drawn = []
    real = plots._grid
    monkeypatch.setattr(plots, "_grid", lambda im, *a: drawn.append(im.shape[0]) or real(im, *a))
    out = tmp_path / "s.png"
    assert main(["sample", str(z2_run), "--num", str(num), "--out", str(out)]) == 0
    assert drawn == [num] and torch.load(out.with_suffix(".pt")).shape[0] == num
    grid = real(torch.zeros(num, 784), (1, 28, 28), min(10, num))
    assert grid.shape[0] == rows * 30 + 2  # 28-pixel cells, 2-pixel padding
