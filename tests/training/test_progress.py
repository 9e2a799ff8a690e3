"""Progress as a user reads it: a bar on a terminal, plain lines in a log file, the banner and the
reference check before the first step, and values read from tensors only when drawn."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from support import tiny_config

from pyro_vae.cli import main
from pyro_vae.progress import Progress
from pyro_vae.training import fit
from pyro_vae.training import observers as training_observers


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- the mechanism ---------------------------------------------------------------------------


def test_a_log_gets_plain_lines_and_a_terminal_gets_a_bar():
    log, terminal = io.StringIO(), Terminal()
    for stream in (log, terminal):
        shown = Progress(40, "work", "batch", stream=stream, interval=0, every=0)
        for i in range(40):
            shown.advance(1, lambda i=i: f"loss {i}")
        shown.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 40  # every=0: a line per advance (the close adds none: nothing new)
    assert re.fullmatch(r"work: 13/40 batches \(32%\), loss 12, 0:00 elapsed", lines[12])
    assert lines[-1].startswith("work: 40/40 batches (100%), loss 39")
    frames = terminal.getvalue().split("\r")
    assert len(frames) > 40 and "40/40" in frames[-1] and "loss 39" in frames[-1]


def test_values_are_computed_only_when_drawn():
    calls = []

    def fields() -> str:
        calls.append(1)
        return "loss 1.0"

    log = io.StringIO()
    shown = Progress(1000, "work", stream=log, every=3600)
    for _ in range(1000):
        shown.advance(1, fields)
    assert calls == []  # an hour between lines: nothing read, nothing written
    shown.close(fields)
    assert len(calls) == 1 and log.getvalue().startswith("work: 1000/1000 batches")


def test_nothing_is_shown_when_turned_off():
    log = io.StringIO()
    shown = Progress(10, "work", stream=log, enabled=False, every=0)
    shown.write("hello")
    for _ in range(10):
        shown.advance(1)
    shown.close()
    assert log.getvalue() == ""


# --- a training run --------------------------------------------------------------------------


def test_a_run_says_what_it_runs_before_the_first_step(tmp_path, small_data):
    log = io.StringIO()
    config = tiny_config(tmp_path, kl_warmup_epochs=1.0, tensorboard=False)
    result = fit(config, small_data, observers=[training_observers.Progress(log, every=0)])
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith(f"run {config.out} (new run): 2 epochs, Adam lr 0.001, seed 0")
    params = sum(p.numel() for p in result.vae.parameters())
    banner = "\n".join(lines[:6])
    assert "device cpu, " in banner and " threads" in banner
    assert "data given from Python: 500 train / 200 test images of 1x28x28, binarize dynamic" in (
        banner
    )
    assert f"z 3; {params:,} parameters" in banner
    assert "estimator mean-field (TraceMeanField_ELBO)" in banner
    assert "beta 0 -> 1 over 1 epochs, then constant; 8 steps of 64 / epoch" in banner
    check = result.summary["reference_check"]
    assert lines[5] == (
        f"reference check: Pyro loss {check['pyro_loss']:.4f} = hand-written "
        f"{check['reference_loss']:.4f} on the first batch of 64 images"
    )
    steps = [line for line in lines if line.startswith("train: ")]
    assert steps[0].startswith("train: 1/16 steps (6%), epoch 1/2, loss ")  # every=0: each step
    first = float(re.search(r"loss ([\d.]+)", steps[0]).group(1))
    assert 400 < first < 700  # per image of the first batch: an untrained model scores ~540
    assert len(steps) == 16
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    row = result.metrics[1]
    assert epoch_lines[1].startswith(
        f"epoch 2/2: train loss {row['train_loss']:.2f}, test -ELBO {row['test_neg_elbo']:.2f}"
    )
    # the step lines' running loss is the epoch's loss per image so far
    last_of_epoch_1 = steps[7]
    assert f"loss {result.metrics[0]['train_loss']:.2f}," in last_of_epoch_1


def test_on_a_terminal_the_run_draws_a_bar_with_loss_and_speed(tmp_path, small_data):
    terminal = Terminal()
    progress = training_observers.Progress(terminal, interval=0)
    fit(tiny_config(tmp_path, tensorboard=False), small_data, observers=[progress])
    out = terminal.getvalue()
    frames = [f for f in out.split("\r") if f.startswith("train:")]
    assert frames and "16/16" in frames[-1]
    assert re.search(r"epoch 2/2, loss \d+\.\d\d, [\d,]+ images/s, test -ELBO", out)
    assert "epoch 1/2: train loss" not in out  # the per-epoch lines are for logs only


def test_a_log_file_gets_lines_not_bar_frames(tmp_path):
    """pyro-vae train with stderr written to a file, as a batch job does."""
    log = tmp_path / "train.log"
    args = ["--epochs", "2", "--hidden", "16", "--z-dim", "2", "--batch-size", "500"]
    with open(log, "w") as err:
        done = subprocess.run(
            [sys.executable, "-m", "pyro_vae", "train", *args, "--out", str(tmp_path / "r")],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 200
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2:"))
    reference = next(i for i, line in enumerate(lines) if line.startswith("reference check:"))
    assert reference < first_epoch  # printed when it runs, not at the end
    assert lines[-1].startswith("train: 16/16 steps (100%)")
    assert "reference check" not in done.stdout  # said once, before the first step


def test_no_progress_prints_the_check_with_the_summary(tmp_path, capsys):
    out = str(tmp_path / "r")
    args = ["--epochs", "1", "--hidden", "16", "--z-dim", "2", "--no-progress", "--out", out]
    assert main(["train", *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines()[0].startswith("reference check: Pyro loss ")
