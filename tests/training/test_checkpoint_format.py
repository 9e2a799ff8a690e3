"""Checkpoints that travel: format 3 is a safetensors file (no pickle) whose metadata holds the
rest of the state as JSON, its digest and its format; it gives back exactly the state it was
given. Runs written by earlier releases (tests/fixtures/release_runs/) keep loading, evaluating
and resuming, and a resumed one goes on in the new format."""

from __future__ import annotations

import copy
import json
import math
import pickle
import shlex
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from support import tiny_config

from pyro_vae import evaluate_elbo, load_run, train
from pyro_vae.cli import main
from pyro_vae.training import run_dir as runs
from pyro_vae.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_vae.training.run import fit
from pyro_vae.version import __version__

RELEASES = Path(__file__).parent.parent / "fixtures" / "release_runs"
RELEASE_RUNS = sorted(p.name for p in RELEASES.iterdir() if p.is_dir())


def assert_same(got: Any, want: Any, where: str = "state") -> None:
    """``got`` is ``want`` to the bit: the same types (int keys stay int, a tuple a tuple),
    tensors of the same dtype, shape and bytes, floats of the same bits."""
    assert type(got) is type(want), f"{where}: {type(got)} is not {type(want)}"
    if isinstance(want, torch.Tensor):
        assert (got.dtype, got.shape, got.device) == (want.dtype, want.shape, want.device), where
        as_bytes = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in (got, want)]
        assert torch.equal(*as_bytes), f"{where}: other values"
    elif isinstance(want, dict):
        assert [(type(k), k) for k in got] == [(type(k), k) for k in want], where
        versions = getattr(want, "_metadata", None)  # a state_dict's: its modules' versions
        assert getattr(got, "_metadata", None) == versions, f"{where}: other module versions"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got.hex() == want.hex() or (math.isnan(got) and math.isnan(want)), where
    else:
        assert got == want, where


@pytest.fixture
def trainer_state(tmp_path, small_data, monkeypatch) -> dict[str, Any]:
    """The state a Trainer hands to the run directory at its last checkpoint (2 epochs)."""
    saved: list[dict[str, Any]] = []
    real = runs.RunDirectory.save_checkpoint

    def keep(self, state):
        saved.append(copy.deepcopy(state))
        real(self, state)

    monkeypatch.setattr(runs.RunDirectory, "save_checkpoint", keep)
    fit(tiny_config(tmp_path, tensorboard=False), small_data)
    return saved[-1]


# --- format 3 -------------------------------------------------------------------------------------


def test_a_trainers_checkpoint_comes_back_exactly(tmp_path, trainer_state):
    written = tmp_path / "run" / runs.CHECKPOINT
    assert not (tmp_path / "run" / runs.LEGACY_CHECKPOINT).exists()
    got = load_checkpoint(written)
    assert_same(got, trainer_state)
    state = got["optimizer"]["state"]
    assert list(state) == list(range(len(state))) and state[3]["exp_avg"].dtype == torch.float32
    assert got["rng"]["torch"].dtype == torch.uint8


def test_every_kind_of_value_comes_back_exactly(tmp_path):
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    state = {
        "tensors": {
            "float64": base,
            "transposed": base.t(),  # not contiguous
            "row": base[1],  # shares base's memory
            "bfloat16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
            "bool": torch.tensor([True, False]),
            "int64": torch.tensor([2**40, -1]),
            "uint8": torch.tensor([0, 255], dtype=torch.uint8),
            "scalar": torch.tensor(3.25),
            "empty": torch.zeros(0, 3),
        },
        "floats": [0.1, -0.0, 5e-324, 1e300, math.inf, -math.inf, 1 / 3],
        "plain": [True, 1, 0, False, None, "", "é/$x", 2**70, -(2**63)],
        "int keys": {0: "a", 7: {1: torch.ones(1)}, -3: [1]},
        "mixed keys": {1: torch.zeros(1), "1": torch.ones(1), None: 2, False: 3, 2.5: 4},
        "dollar keys": {"$tensor": "not a tensor", "$float": "nan"},
        "a/b": torch.full((1,), 2.0),
        "a": {"b": torch.full((1,), 3.0)},  # the same path as "a/b"
        "tuples": ((400, 200), (), [()]),
        "state_dict": torch.nn.Sequential(torch.nn.Linear(2, 1)).state_dict(),
        "ordered": OrderedDict([("b", 1), ("a", {2: 3})]),
        "empty": [{}, []],
    }
    save_checkpoint(tmp_path / runs.CHECKPOINT, state)
    assert_same(load_checkpoint(tmp_path / runs.CHECKPOINT), state)
    state["nan"] = math.nan
    save_checkpoint(tmp_path / runs.CHECKPOINT, state)
    assert math.isnan(load_checkpoint(tmp_path / runs.CHECKPOINT)["nan"])


def test_a_checkpoint_is_a_safetensors_file_without_pickle(tmp_path, trainer_state):
    path = tmp_path / "run" / runs.CHECKPOINT
    data = path.read_bytes()
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata, names = f.metadata(), set(f.keys())
    assert metadata["format"] == "3" and metadata["writer"] == f"pyro-vae {__version__}"
    assert len(metadata["sha256"]) == 64 and isinstance(json.loads(metadata["structure"]), dict)
    assert {"rng/torch", "optimizer/state/0/exp_avg", "position/epoch_rng/batches"} <= names
    assert {n for n in names if n.startswith("model/")} == {
        f"model/{name}" for name in trainer_state["model"]
    }
    tensors = safetensors.torch.load(data)  # the whole file, every byte accounted for
    assert set(tensors) == names and len(tensors) > 20
    assert not data.startswith((b"PK\x03\x04", b"\x80"))  # neither torch.save's zip nor a pickle
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(data)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _header_end(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _add_a_tensor(path: Path) -> None:
    """The same checkpoint with one more tensor, which its structure does not place."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    path.write_bytes(safetensors.torch.save(tensors | {"extra": torch.zeros(1)}, metadata))


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "is corrupt"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1]), "is corrupt"),
        (lambda p: p.write_bytes(p.read_bytes()[:5]), "is corrupt"),
        (lambda p: p.write_bytes(b""), "is corrupt"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "is corrupt"),
        (lambda p: _flip(p, p.stat().st_size - 3), "do not match its checksum"),  # a weight
        (lambda p: _flip(p, _header_end(p) + 1), "do not match its checksum"),
        (lambda p: _flip(p, p.read_bytes().index(b'"sha256":"') + 12), "match its checksum"),
        (lambda p: _flip(p, p.read_bytes().index(b'"$tensor') + 3), "is corrupt"),
        (lambda p: _flip(p, 2), "is corrupt"),  # the header's length
        (_add_a_tensor, "1 of its tensors have no place"),
    ],
)
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, damage, said):
    path = tmp_path / runs.CHECKPOINT
    save_checkpoint(path, {"model": {"w": torch.arange(64.0)}, "position": {"step": 3}})
    damage(path)
    with pytest.raises(CheckpointError, match=said) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_later_format_or_another_programs_file_is_refused(tmp_path):
    path = tmp_path / runs.CHECKPOINT
    tensors = {"w": torch.zeros(2)}
    path.write_bytes(safetensors.torch.save(tensors, metadata={"format": "4", "writer": "x 9"}))
    with pytest.raises(CheckpointError, match="has format '4', written by x 9.*later release"):
        load_checkpoint(path)
    path.write_bytes(safetensors.torch.save(tensors))
    with pytest.raises(CheckpointError, match="not a pyro-vae checkpoint"):
        load_checkpoint(path)


def test_resuming_a_new_checkpoint_is_the_unbroken_run(tmp_path, small_data):
    straight = fit(tiny_config(tmp_path / "straight", epochs=3, tensorboard=False), small_data)
    fit(tiny_config(tmp_path / "split", tensorboard=False), small_data)
    split = tmp_path / "split" / "run"
    assert sorted(p.name for p in split.glob("checkpoint*")) == [
        runs.PREVIOUS_CHECKPOINT,
        runs.CHECKPOINT,
    ]
    resumed = train(data=small_data, out=str(split), resume=True, epochs=3, progress=False)
    for a, b in zip(straight.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    want = load_checkpoint(tmp_path / "straight" / "run" / runs.CHECKPOINT)
    got = load_checkpoint(split / runs.CHECKPOINT)
    assert_same(got["optimizer"], want["optimizer"])
    assert_same(got["rng"], want["rng"])


# --- runs of earlier releases ---------------------------------------------------------------------


def _as_format_2(run: Path) -> None:
    """Make ``run`` a run of the release before format 3: checkpoint.pt by torch.save, with its
    digest and "format": 2, and no checkpoint.safetensors."""
    from pyro_vae.training.checkpoint import content_digest

    state = load_checkpoint(run / runs.CHECKPOINT) | {"format": 2}
    state["sha256"] = content_digest(state)
    torch.save(state, run / runs.LEGACY_CHECKPOINT)
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
        (run / name).unlink(missing_ok=True)


def test_a_format_2_run_resumes_as_the_unbroken_run_and_moves_to_format_3(
    tmp_path, small_data, capsys
):
    straight = fit(tiny_config(tmp_path / "straight", epochs=3, tensorboard=False), small_data)
    fit(tiny_config(tmp_path / "split", epochs=1, tensorboard=False), small_data)
    run = tmp_path / "split" / "run"
    _as_format_2(run)
    assert runs.find_checkpoint(run) == run / runs.LEGACY_CHECKPOINT
    fit(tiny_config(tmp_path / "split", epochs=2, tensorboard=False), small_data, resume=True)
    assert runs.find_checkpoint(run) == run / runs.CHECKPOINT
    assert runs.find_previous_checkpoint(run) == run / runs.LEGACY_CHECKPOINT  # kept, for now
    # a damaged first new checkpoint: the earlier release's one is offered, and works
    good = (run / runs.CHECKPOINT).read_bytes()
    _flip(run / runs.CHECKPOINT, len(good) - 3)
    assert main(["evaluate", str(run), "--num-samples", "2", "--max-images", "4"]) == 2
    offered = shlex.split(capsys.readouterr().err.split("run: ")[1])
    assert offered == ["rm", str(run / runs.CHECKPOINT)]
    (run / runs.CHECKPOINT).unlink()
    assert load_run(run, device="cpu", data=small_data).epoch == 1
    (run / runs.CHECKPOINT).write_bytes(good)
    config = tiny_config(tmp_path / "split", epochs=3, tensorboard=False)
    resumed = fit(config, small_data, resume=True)
    for a, b in zip(straight.vae.parameters(), resumed.vae.parameters(), strict=True):
        assert torch.equal(a, b)
    assert sorted(p.name for p in run.glob("checkpoint*")) == [
        runs.PREVIOUS_CHECKPOINT,
        runs.CHECKPOINT,
    ]  # two of the new: the earlier release's files are gone
    want = load_checkpoint(tmp_path / "straight" / "run" / runs.CHECKPOINT)
    assert_same(load_checkpoint(run / runs.CHECKPOINT)["optimizer"], want["optimizer"])


def test_overwrite_removes_the_checkpoints_of_both_formats(tmp_path):
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT, "checkpoint.pt", "checkpoint.prev.pt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    runs.RunDirectory(tmp_path).clear()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.fixture(params=RELEASE_RUNS)
def release_run(request, tmp_path) -> Path:
    """A copy of a run written by an earlier release (loading and resuming take its lock)."""
    copy = tmp_path / request.param
    shutil.copytree(RELEASES / request.param, copy)
    return copy


def test_the_fixtures_are_the_releases_runs():
    assert RELEASE_RUNS == ["0.1.0", "0.2.0", "format-2"]
    for name in RELEASE_RUNS:
        files = sorted(p.name for p in (RELEASES / name).iterdir())
        assert files == ["checkpoint.pt", "config.json", "metrics.csv", "summary.json"]
        assert (RELEASES / name / "checkpoint.pt").read_bytes()[:4] == b"PK\x03\x04"


def test_a_run_of_an_earlier_release_loads_and_evaluates(release_run):
    loaded = load_run(release_run, device="cpu")
    saved = torch.load(release_run / runs.LEGACY_CHECKPOINT, weights_only=True)["model"]
    assert loaded.epoch == 1
    assert_same(dict(loaded.vae.state_dict()), dict(saved))  # 0.1.0 named vae.q "posterior"
    torch.manual_seed(0)
    bound = evaluate_elbo(loaded.vae.model, loaded.vae.guide, loaded.test_x, 1000).neg_elbo
    recorded = json.loads((release_run / runs.SUMMARY).read_text())["test_neg_elbo"]
    assert math.isfinite(bound) and bound == pytest.approx(recorded, abs=2.0)  # 1 sample of z
    assert main(["evaluate", str(release_run), "--num-samples", "10", "--max-images", "20"]) == 0
    assert (release_run / runs.EVALUATION).exists()


def test_a_run_of_an_earlier_release_resumes_into_format_3(release_run):
    before = load_checkpoint(release_run / runs.LEGACY_CHECKPOINT)
    result = train(out=str(release_run), resume=True, epochs=2, progress=False)
    assert [row["epoch"] for row in result.metrics] == [1, 2]
    state = load_checkpoint(release_run / runs.CHECKPOINT)
    assert state["position"]["epoch"] == 2
    assert_same(state["metrics"][0], before["metrics"][0])
    assert_same(load_checkpoint(release_run / runs.LEGACY_CHECKPOINT), before)  # kept as previous
    assert load_run(release_run, device="cpu").epoch == 2
