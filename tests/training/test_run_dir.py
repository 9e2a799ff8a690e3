"""The run directory's contract, part by part: the lock, checksummed checkpoints that keep the
one before them and never run code, directories swapped in whole, what --overwrite removes,
and the inputs checked at the edge (data, shapes, options from a config.json)."""

from __future__ import annotations

import fcntl
import gzip
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae.data import DataError, ImageData, read_idx_dir
from pyro_vae.model import build_vae
from pyro_vae.training import TrainConfig, Trainer
from pyro_vae.training import run_dir as runs
from pyro_vae.training.atomic_files import recover_directory, replace_directory
from pyro_vae.training.checkpoint import (
    CheckpointError,
    content_digest,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)
from pyro_vae.training.options import ConfigError
from pyro_vae.training.position import Position
from pyro_vae.training.run_lock import LOCK_NAME, RunInUse, RunLock
from pyro_vae.training.stops import non_finite_message

# --- the lock ------------------------------------------------------------------------------------


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path, "train"):
        with pytest.raises(RunInUse, match=f"pid {os.getpid()}, pyro-vae train"):
            RunLock(tmp_path, "evaluate").acquire()
    with RunLock(tmp_path, "evaluate") as lock:  # released: free again, nothing to take over
        assert lock.took_over is None
    assert not (tmp_path / LOCK_NAME).exists()  # a clean release leaves no file


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    code = "import sys,time;from pyro_vae.training.run_lock import RunLock;"
    code += "RunLock(sys.argv[1],'train').acquire();print('held',flush=True);time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
        RunLock(tmp_path, "train").acquire()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path, "train") as lock:
        assert lock.took_over["pid"] == holder.pid


@pytest.mark.parametrize("change", ["replaced", "removed"])
def test_a_lock_file_changed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch, change):
    """The lock file may be removed (a holder releasing) and made anew while we wait to lock
    the one we opened: the lock taken is on the file the path names now, so a second writer
    is still refused."""
    path = tmp_path / LOCK_NAME
    real_flock = fcntl.flock
    changed = []

    def flock_after_a_change(fd, operation):
        if not changed:
            changed.append(operation)
            path.unlink()
            if change == "replaced":
                path.write_text("")
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_change)
    with RunLock(tmp_path, "train"):
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert changed and path.exists()
        with pytest.raises(RunInUse, match=f"pid {os.getpid()}, pyro-vae train"):
            RunLock(tmp_path, "evaluate").acquire()
    assert not path.exists()


# --- checkpoints ---------------------------------------------------------------------------------


def _state(value: float = 1.0) -> dict:
    return {
        "model": {"w": torch.full((3, 2), value), "b": torch.zeros(2, dtype=torch.bfloat16)},
        "position": {
            "epoch": 1,
            "step": 7,
            "epoch_rng": {"g": torch.tensor([1, 2], dtype=torch.uint8)},
        },
        "config": {"hidden": (400, 200), "lr": 1e-3, "data_dir": None, "compile": False},
        "metrics": [{"epoch": 1.0, "loss": 0.5}],
    }


def test_a_checkpoint_round_trips_and_keeps_the_one_before(tmp_path):
    path = tmp_path / runs.CHECKPOINT
    save_checkpoint(path, _state(1.0))
    save_checkpoint(path, _state(2.0))
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 2), 2.0))
    before = load_checkpoint(previous_path(path))
    assert torch.equal(before["model"]["w"], torch.full((3, 2), 1.0))
    assert before["config"]["hidden"] == (400, 200) and set(before) == set(_state())


def test_the_digest_sees_every_value_and_no_pickling_detail():
    base = content_digest(_state())
    changed = _state()
    changed["model"]["w"][1, 1] += 1e-6
    assert content_digest(changed) != base
    changed = _state()
    changed["config"]["lr"] = 1e-3 + 1e-18
    assert content_digest(changed) != base
    changed = _state()
    changed["config"]["hidden"] = [400, 200]  # a tuple that comes back a list: the same value
    assert content_digest(changed) == base
    assert content_digest({"model": torch.zeros(2), "x": 1}) != content_digest(
        {"model": torch.zeros(2, dtype=torch.int32), "x": 1}
    )


def test_a_changed_weight_of_an_earlier_releases_checkpoint_is_named_corrupt(tmp_path):
    path = tmp_path / runs.LEGACY_CHECKPOINT
    state = _state()
    state["sha256"] = content_digest(state)
    state["format"] = 2
    state["model"]["w"][0, 0] = 5.0  # the bytes change after the digest was taken
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="do not match its checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("removed", ["sha256", "format"])
def test_a_checkpoint_with_its_digest_or_format_removed_is_still_checked(tmp_path, removed):
    """Taking one of the two keys out of a format-2 checkpoint.pt does not make it load
    unchecked: only a 0.2.0 checkpoint, with neither, is read without its checksum."""
    path = tmp_path / runs.LEGACY_CHECKPOINT
    state = _state() | {"format": 2}
    state["sha256"] = content_digest(state)
    state["model"]["w"][0, 0] = 5.0
    del state[removed]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="do not match its checksum"):
        load_checkpoint(path)
    state.pop("sha256", None)
    state.pop("format", None)
    torch.save(state, path)
    assert float(load_checkpoint(path)["model"]["w"][0, 0]) == 5.0


RAN: list[str] = []


def _record(what: str) -> None:
    RAN.append(what)


class _Hostile:
    """Unpickling it calls a function of the unpickler's choosing (here a harmless one)."""

    def __reduce__(self):
        return (_record, ("code ran",))


def test_a_checkpoint_holding_code_is_refused_before_it_runs(tmp_path):
    path = tmp_path / runs.LEGACY_CHECKPOINT
    torch.save({"model": _Hostile()}, path)
    RAN.clear()
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(path)
    assert RAN == []
    disguised = tmp_path / runs.CHECKPOINT  # a pickle under the new name is not read at all
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(disguised)
    assert RAN == []
    torch.load(path, weights_only=False)  # what loading used to do: the code runs
    assert RAN == ["code ran"]


def test_a_checkpoint_refuses_objects_it_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="only tensors and plain data"):
        save_checkpoint(tmp_path / "c.pt", {"device": torch.device("cpu")})


def test_a_corrupt_checkpoint_offers_the_previous_one(tmp_path):
    run = runs.RunDirectory(tmp_path)
    good = {k: 0 for k in runs.CHECKPOINT_KEYS} | {"position": {"step": 40}}
    run.save_checkpoint(good)
    run.save_checkpoint(good | {"position": {"step": 50}})
    (tmp_path / runs.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(runs.RunDirectoryError, match="corrupt") as err:
        run.saved_state()
    command = shlex.split(str(err.value).split("run: ")[1])
    assert "step 40" in str(err.value) and command[0] == "mv"
    os.replace(command[1], command[2])
    assert run.saved_state()["position"]["step"] == 40


@pytest.mark.parametrize("key", ["model", "optimizer", "position", "config", "rng", "metrics"])
def test_a_checkpoint_missing_a_part_is_refused_for_resume(tmp_path, key):
    """A whole, checksummed checkpoint that lacks one of the parts a run continues from is
    named incomplete, not resumed."""
    run = runs.RunDirectory(tmp_path)
    whole = {k: 0 for k in ("model", "optimizer", "position", "config", "rng", "metrics")}
    run.save_checkpoint(whole)
    assert run.saved_state() == whole
    run.save_checkpoint({k: v for k, v in whole.items() if k != key})
    with pytest.raises(runs.RunDirectoryError, match=rf"is incomplete \(no {key}\)"):
        run.saved_state()


# --- whole files and whole sets -------------------------------------------------------------------


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "a.png").write_text("old")

    def fails(d):
        (d / "a.png").write_text("new")
        raise RuntimeError("killed while drawing")

    with pytest.raises(RuntimeError):
        replace_directory(figures, fails)
    assert (figures / "a.png").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    replace_directory(figures, lambda d: (d / "b.png").write_text("new"))
    assert [p.name for p in figures.iterdir()] == ["b.png"]


def test_a_crash_between_the_renames_is_undone(tmp_path):
    figures = tmp_path / "figures"
    (tmp_path / ".figures.old").mkdir()
    (tmp_path / ".figures.old" / "a.png").write_text("old")
    (tmp_path / ".figures.x1.new").mkdir()  # a set a kill left half drawn
    recover_directory(figures)
    assert (figures / "a.png").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]


def test_overwrite_removes_every_artifact_and_only_those(tmp_path):
    names = [*runs.RECORD, "evaluation.json", "report.html", "samples.png", "samples.pt"]
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "loss_curves.png").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    run = runs.RunDirectory(tmp_path)
    with pytest.raises(runs.RunDirectoryError, match="already holds a run"):
        run.refuse_to_clobber()
    run.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(runs.RunDirectoryError, match=r"did not write \(notes.txt\)"):
        run.refuse_to_clobber()


def test_an_overwrite_killed_part_way_is_finished_by_the_next_writer(tmp_path):
    for name in (runs.CONFIG, runs.METRICS, "evaluation.json", "notes.txt"):
        (tmp_path / name).write_text("x")  # the checkpoints were already gone
    (tmp_path / runs.CLEARING).write_text("")
    with runs.RunDirectory(tmp_path).lock("train"):
        assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_directory_made_for_a_failed_command_is_removed(tmp_path):
    target = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError):
        with runs.RunDirectory(target).lock("train"):
            raise RuntimeError("bad data")
    assert not target.exists()


def test_a_directory_that_was_there_is_kept_though_left_empty(tmp_path):
    """Only a directory the lock made is removed again: an empty one that was already there
    stays, whether the command fails or writes nothing."""
    target = tmp_path / "mine"
    target.mkdir()
    with pytest.raises(RuntimeError):
        with runs.RunDirectory(target).lock("train"):
            raise RuntimeError("bad data")
    assert target.is_dir() and list(target.iterdir()) == []
    with runs.RunDirectory(target).lock("evaluate"):
        pass
    assert target.is_dir()


@pytest.mark.parametrize(
    "name", [runs.PREVIOUS_CHECKPOINT, runs.LEGACY_CHECKPOINT, "checkpoint.prev.pt"]
)
def test_the_previous_checkpoint_alone_is_a_run(tmp_path, name):
    """A directory holding only checkpoint.prev.safetensors, or an earlier release's
    checkpoint.pt or checkpoint.prev.pt (and a config), holds a run: a new one is refused with
    the run's advice (--resume or --overwrite), and its files are not foreign."""
    run = runs.RunDirectory(tmp_path)
    save_checkpoint(tmp_path / name, {"model": torch.zeros(2)})
    (tmp_path / runs.CONFIG).write_text("{}")
    assert run.holds_a_run()
    assert run.foreign_files() == []
    with pytest.raises(runs.RunDirectoryError, match="already holds a run: continue it"):
        run.refuse_to_clobber()


def test_only_a_writers_hidden_temporaries_are_not_foreign(tmp_path):
    """A new run may start beside a killed write's .NAME.*.tmp (the next writer removes it),
    but a hidden file of someone else's (.gitignore) or a visible *.tmp is foreign: refused."""
    run = runs.RunDirectory(tmp_path)
    (tmp_path / ".config.json.abc123.tmp").write_text("half")
    assert run.foreign_files() == []
    run.refuse_to_clobber()
    (tmp_path / ".gitignore").write_text("*")
    (tmp_path / "notes.tmp").write_text("mine")
    assert run.foreign_files() == [".gitignore", "notes.tmp"]
    with pytest.raises(runs.RunDirectoryError, match=r"did not write \(\.gitignore, notes\.tmp\)"):
        run.refuse_to_clobber()


def test_a_run_directory_path_must_name_a_directory(tmp_path):
    with pytest.raises(runs.RunDirectoryError, match="empty"):
        runs.RunDirectory("")
    (tmp_path / "f").write_text("x")
    with pytest.raises(runs.RunDirectoryError, match="is a file"):
        runs.RunDirectory(tmp_path / "f")


# --- inputs at the edge ---------------------------------------------------------------------------


def _write_idx(directory, fill: int, n: int = 6) -> None:
    directory.mkdir()
    header = {
        "images": np.array([0x00000803, n, 28, 28], ">u4").tobytes(),
        "labels": np.array([0x00000801, n], ">u4").tobytes(),
    }
    for split in ("train", "t10k"):
        images = header["images"] + bytes([fill]) * (n * 784)
        labels = header["labels"] + bytes(range(n))
        (directory / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (directory / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


def test_the_idx_cache_follows_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _write_idx(tmp_path / "a", fill=10)
    _write_idx(tmp_path / "b", fill=200)
    a, b = read_idx_dir(tmp_path / "a", "mnist"), read_idx_dir(tmp_path / "b", "mnist")
    assert torch.all(a.train_x == 10 / 255) and torch.all(b.train_x == 200 / 255)


def test_data_with_labels_short_of_images_is_refused():
    x = torch.rand(5, 4)
    with pytest.raises(DataError, match="5 train images but"):
        ImageData(x, torch.zeros(3), x, torch.zeros(5), shape=(4,)).validate()
    with pytest.raises(DataError, match="holds no images"):
        ImageData(x[:0], torch.zeros(0), x, torch.zeros(5), shape=(4,)).validate()


def test_the_model_takes_rows_of_its_own_width():
    vae = build_vae((1, 28, 28), z_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match=r"\(N, 784\); got shape \(784,\) \(one image"):
        vae.guide(torch.zeros(784))
    with pytest.raises(ValueError, match=r"got shape \(2, 100\)"):
        vae.model(torch.zeros(2, 100))
    with pytest.raises(ValueError, match="tuple of positive sizes"):
        build_vae(())


@pytest.mark.parametrize(
    "record, needle",
    [
        ([], "not a list"),
        ({"z_dim": "four"}, "--z-dim must be a whole number"),
        ({"hidden": 5}, "--hidden must be a list of whole numbers"),
        ({"lr": float("inf")}, "--lr must be a finite number"),
        ({"epochs": True}, "--epochs must be a whole number"),
        ({"out": ""}, "--out must be a directory path"),
    ],
)
def test_a_config_record_of_the_wrong_shape_is_one_clear_error(record, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.from_dict(record)


# --- messages ------------------------------------------------------------------------------------


def test_the_resume_command_survives_the_shell(tmp_path):
    out = str(tmp_path / "my runs" / "it's here")
    trainer = Trainer.__new__(Trainer)
    trainer.config = TrainConfig(out=out)
    trainer.pos = Position(epoch=1, batch=3, step=10)
    message = str(trainer._interrupted(2))
    assert shlex.split(message.split("continue with: ")[1])[-1] == out


def test_a_non_finite_loss_before_any_checkpoint_claims_none():
    net = torch.nn.Linear(2, 2)
    assert "no checkpoint had been written yet" in non_finite_message(
        net, float("nan"), "step 1", "bernoulli", 1e-3, "runs/x", None
    )
    assert "checkpoint (step 50)" in non_finite_message(
        net, float("nan"), "step 57", "bernoulli", 1e-3, "runs/x", 50
    )
