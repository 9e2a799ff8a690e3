"""The figures and the report say what they show: the traversal labels each image with the z
value it decodes, the interpolation marks its end columns as the original test images and the
others with their weight, epoch axes tick whole epochs, and the report lists the options that
apply to the run and writes its numbers by one rule."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from matplotlib.colors import to_rgba

from pyro_vae.inference import posterior_means
from pyro_vae.model import build_model
from pyro_vae.report import REPORT, figures, plots, write_report
from pyro_vae.training import TrainConfig
from pyro_vae.training import run_dir as runs

SHAPE = (1, 28, 28)
CELL = SHAPE[-1] + plots.PAD  # an image and the padding after it, in the grid's pixels


@pytest.fixture
def decoded(monkeypatch):
    """Every batch of codes the figures decode, in order."""
    seen: list[torch.Tensor] = []
    real = figures._decoder

    def recording(vae):
        decode = real(vae)
        return lambda z: seen.append(z.detach().clone()) or decode(z)

    monkeypatch.setattr(figures, "_decoder", recording)
    return seen


def _model(z_dim: int):
    torch.manual_seed(0)
    return build_model(SHAPE, z_dim=z_dim, hidden=(16,)).eval()


def _cell(position: float) -> int:
    """The column (or row) of the image grid whose image a tick at ``position`` sits on."""
    index = int((position - plots.PAD) // CELL)
    start = plots.PAD + index * CELL - 0.5  # pixel i spans [i - 0.5, i + 0.5]
    assert start <= position <= start + SHAPE[-1], f"a tick between two images, at {position}"
    return index


def _ticks(axis) -> list[tuple[int, str]]:
    """(cell, label) of each tick of an image grid's axis, in order."""
    labels = [t.get_text() for t in axis.get_ticklabels()]
    return [(_cell(p), label) for p, label in zip(axis.get_ticklocs(), labels, strict=True)]


def test_2d_traversal_labels_each_column_and_row_with_the_z_it_decodes(
    mnist_sample, decoded, tmp_path
):
    vae = _model(2)
    codes = posterior_means(vae.guide, mnist_sample.test_x[:500])
    fig = figures.traversal(vae, codes, codes.var(0), SHAPE, tmp_path / "t.png")
    z = decoded[0].reshape(15, 15, 2)  # (image row, image column, dimension)
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z1", "z2")
    columns, rows = _ticks(ax.xaxis), _ticks(ax.yaxis)
    assert [c for c, _ in columns] == [r for r, _ in rows] == list(range(15))
    for c, label in columns:  # the column's z1, the same down the column
        assert torch.equal(z[:, c, 0], z[0, c, 0].expand(15))
        assert label == plots.z_label(z[0, c, 0])
    for r, label in rows:  # the row's z2, the same along the row; z2 grows upwards
        assert torch.equal(z[r, :, 1], z[r, 0, 1].expand(15))
        assert label == plots.z_label(z[r, 0, 1])
    assert float(rows[0][1]) > float(rows[-1][1]) and float(columns[0][1]) < float(columns[-1][1])
    q = torch.quantile(codes, torch.tensor([0.05, 0.95]), dim=0)
    torch.testing.assert_close(z[-1, 0], q[0])  # bottom left: both 5% quantiles
    assert "5% to 95% quantiles" in ax.get_title()


def test_traversal_labels_each_row_with_its_dimension_and_the_values_it_decodes(
    mnist_sample, decoded, tmp_path
):
    vae = _model(5)
    codes = posterior_means(vae.guide, mnist_sample.test_x[:500])
    activity = torch.tensor([0.3, 0.05, 2.0, 0.001, 0.8])
    fig = figures.traversal(vae, codes, activity, SHAPE, tmp_path / "t.png", max_rows=4)
    z = decoded[0].reshape(4, 15, 5)
    median = codes.median(dim=0).values
    assert len(fig.axes) == 4
    for row, (ax, j) in enumerate(zip(fig.axes, [2, 4, 0, 1], strict=True)):  # most active first
        assert _ticks(ax.yaxis) == [(0, f"z{j + 1}")]  # numbered from 1, as z1, z2 in 2-D
        others = [d for d in range(5) if d != j]
        assert torch.equal(z[row][:, others], median[others].expand(15, 4))  # held at the median
        assert torch.equal(z[row][:, j], torch.sort(z[row][:, j]).values)
        columns = _ticks(ax.xaxis)
        assert [c for c, _ in columns] == list(range(15))
        assert [label for _, label in columns] == [plots.z_label(v) for v in z[row][:, j]]
    assert "every other dimension is held at its median" in fig.texts[0].get_text()


def test_interpolation_frames_the_originals_and_labels_the_weights(mnist_sample, decoded, tmp_path):
    vae = _model(3)
    x, y = mnist_sample.test_x[::4], mnist_sample.test_y[::4]  # every class
    fig = figures.interpolation(vae, x, y, SHAPE, tmp_path / "i.png", steps=6, pairs=3)
    (ax,) = fig.axes
    columns = _ticks(ax.xaxis)
    assert [c for c, _ in columns] == list(range(8))
    labels = [label for _, label in columns]
    assert "original" in labels[0] and "original" in labels[-1]
    assert not any("original" in label for label in labels[1:-1])
    shown = torch.from_numpy(ax.images[0].get_array()[..., 0].copy())
    assert shown.shape == (plots.PAD + 3 * CELL, plots.PAD + 8 * CELL)

    def image(row: int, column: int) -> torch.Tensor:
        top, left = plots.PAD + row * CELL, plots.PAD + column * CELL
        return shown[top : top + 28, left : left + 28].reshape(-1)

    for row in range(3):
        # the framed end columns show test images themselves, which the row interpolates
        ends = [int(torch.nonzero((x == image(row, c)).all(1))[0]) for c in (0, 7)]
        za, zb = posterior_means(vae.guide, x[ends])
        for k, label in enumerate(labels[1:-1]):
            z = decoded[row][k]
            t = float((z - za) @ (zb - za) / (zb - za).square().sum())
            torch.testing.assert_close(z, za + t * (zb - za))
            assert label == f"t={t:.2f}"
    frames = [p for p in ax.patches if not p.get_fill()]
    assert len(frames) == 2
    for frame, column in zip(frames, (0, 7), strict=True):
        left, right = frame.get_x(), frame.get_x() + frame.get_width()
        assert left < plots.cell_centres(8, 28)[column] < right
        assert right - left < CELL + 2  # around that column only
        assert frame.get_height() >= 3 * CELL
        tick = ax.get_xticklabels()[column]  # the label in the frame's colour
        assert to_rgba(tick.get_color()) == tuple(frame.get_edgecolor())
    assert to_rgba(ax.get_xticklabels()[1].get_color()) != tuple(frames[0].get_edgecolor())


@pytest.mark.parametrize("epochs", [1, 2, 3, 7])
def test_epoch_axes_tick_whole_epochs(tmp_path, epochs):
    rows = [
        {
            "epoch": float(e),
            "train_loss": 300.0 - e,
            **{f"{s}_{k}": 200.0 - e for s in ("train", "test") for k in ("neg_elbo", "rate")},
            **{f"{s}_distortion": 190.0 - e for s in ("train", "test")},
        }
        for e in range(1, epochs + 1)
    ]
    fig = plots.loss_curves(rows, tmp_path / "loss.png")
    for ax in fig.axes:
        low, high = sorted(ax.get_xlim())
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
        assert {1, epochs} <= set(ticks) or epochs > 5  # a short run: every epoch ticked


def test_dimension_axes_tick_whole_dimensions(tmp_path):
    activity = torch.tensor([1.5, 0.003])
    fig = plots.kl_per_dimension(torch.tensor([3.0, 0.01]), activity, 0.01, tmp_path / "kl.png")
    profiles = plots.activity_profiles(
        [{"setting": "a", "activity": [1.0, 0.5, 0.001], "active_units": 2}],
        tmp_path / "profiles.png",
        "profiles",
    )
    for ax in [*fig.axes, *profiles.axes]:
        low, high = sorted(ax.get_xlim())
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    for ax in fig.axes:  # dimensions numbered from 1, as the traversal's rows and z1, z2
        assert [bar.get_x() + bar.get_width() / 2 for bar in ax.patches] == [1, 2]


# --- the report --------------------------------------------------------------------------------


def _run_dir(tmp_path, **options):
    """A run directory as training leaves it (config, metrics, summary), without training."""
    config = TrainConfig(out=str(tmp_path), **options)
    (tmp_path / runs.CONFIG).write_text(json.dumps(config.as_dict(), indent=2))
    runs.write_metrics(
        tmp_path / runs.METRICS,
        ["epoch", "beta", "train_loss", "test_neg_elbo", "test_rate", "train_seconds"],
        [
            {"epoch": 1, "beta": 1 / 3, "train_loss": 445.60709375, "test_neg_elbo": 305.976070,
             "test_rate": 27.5021953125, "train_seconds": 0.31968593299825443},
            {"epoch": 2, "beta": 2 / 3, "train_loss": 12345.6, "test_neg_elbo": 240.678472,
             "test_rate": float("nan"), "train_seconds": 12.0},
            {"epoch": 3, "beta": 1.0, "train_loss": 0.000123, "test_neg_elbo": 228.17329394,
             "test_rate": -0.0004, "train_seconds": 0.29841},
        ],
    )  # fmt: skip
    summary = {
        "test_neg_elbo": 228.17329394531248,
        "test_distortion": 215.86325,
        "test_rate": 12.3100439453125,
        "seconds_per_epoch": 0.26078880400018534,
        "device": "cpu",
        "reference_check": {"pyro_loss": 70305.65625, "reference_loss": 70305.6640625},
    }
    (tmp_path / runs.SUMMARY).write_text(json.dumps(summary))
    evaluation = {"epoch": 3, "num_samples": 100, "test_log_likelihood": -221.4567891,
                  "active_units": 3}  # fmt: skip
    (tmp_path / runs.EVALUATION).write_text(json.dumps(evaluation))
    write_report(tmp_path)
    return json.loads((tmp_path / runs.CONFIG).read_text()), (tmp_path / REPORT).read_text()


def _table_after(page: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading``, row by row (the header first)."""
    table = re.search(r"<table.*?</table>", page[page.index(heading) :], re.S).group(0)
    return [
        [html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]


def test_report_lists_the_options_that_apply_and_no_null_ones(tmp_path):
    recorded, page = _run_dir(
        tmp_path, estimator="iwae", z_dim=4, hidden=(32, 16), lr=1e-4, kl_warmup_epochs=2.0
    )
    header, *rows = _table_after(page, "<h2>Configuration")
    assert header == ["group", "option", "value"]
    shown = {option: value for _, option, value in rows}
    assert len(shown) == len(rows)  # one row per option
    nulls = {k for k, v in recorded.items() if v is None}
    assert {"sigma", "free_bits", "capacity", "rank", "cuda_graphs", "data_dir"} <= nulls
    assert not (nulls - {"particles"}) & set(shown)
    # iwae takes particles but the run left it unset: the estimator's own default applies
    assert shown["particles"] == "5 (the default of estimator iwae)"
    records = ("progress", "part_options", "plugins", "data_source")  # (empty: no rows)
    applied = {k: v for k, v in recorded.items() if v is not None and k not in records}
    assert set(shown) == set(applied) | {"particles"}
    assert shown["estimator"] == "iwae" and shown["grad"] == "standard"
    assert shown["hidden"] == "32, 16" and shown["lr"] == "0.0001" and shown["z_dim"] == "4"
    assert shown["kl_warmup_epochs"] == "2.0"


def test_report_writes_every_number_by_one_rule(tmp_path):
    _, page = _run_dir(tmp_path)
    header, *rows = _table_after(page, "<h2>Metrics per epoch")
    assert header == ["epoch", "beta", "train_loss", "test_neg_elbo", "test_rate", "train_seconds"]
    assert rows == [
        ["1", "0.33", "445.61", "305.98", "27.50", "0.32"],
        ["2", "0.67", "12345.60", "240.68", "NaN", "12.00"],
        ["3", "1.00", "0.00", "228.17", "0.00", "0.30"],
    ]
    cards = dict(re.findall(r"<div>([^<]*)<b>([^<]*)</b>", page))
    assert cards == {
        "test -ELBO": "228.17",
        "test distortion": "215.86",
        "test rate (KL)": "12.31",
        "test log p(x), K=100": "-221.46",
        "active units": "3",
        "seconds per epoch": "0.26",
    }
    assert "Pyro's loss 70305.66, hand-written loss 70305.66" in page
    text = re.sub(r'src="data:[^"]*"', "", page)
    assert not re.search(r"\d[eE][+-]?\d", text)  # no exponent notation anywhere
