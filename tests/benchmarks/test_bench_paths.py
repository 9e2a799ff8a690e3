"""The benchmark's paths beyond timing: FLOPs counted by hand, the machine's matmul peak, the
rate columns of the table, which paths run with which options (the NumPyro ones need JAX and a
one-sample ELBO), NumPyro's two paths training, and the hand-written IWAE path."""

from __future__ import annotations

import json
import os
import sys

# these tests check bookkeeping, not speed: compile the NumPyro paths' functions quickly
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks import compare, machine  # noqa: E402
from benchmarks import paths as bench_paths  # noqa: E402
from benchmarks.machine import machine_line, matmul_peak_gflops  # noqa: E402
from benchmarks.markdown_report import markdown_report  # noqa: E402
from benchmarks.paths import (  # noqa: E402
    PATHS,
    choose_paths,
    epoch_matmul_flops,
    estimator_options,
    step_matmul_flops,
)
from pyro_vae.data import ImageData  # noqa: E402

NO_JAX = "JAX is not installed (pip install 'pyro-vae[numpyro]')"


@pytest.fixture
def small_peak(monkeypatch):
    """The matmul peak on 128 x 128 matrices: these runs check bookkeeping, not the machine."""
    monkeypatch.setattr(machine, "PEAK_MATMUL_SIZE", 128)


@pytest.fixture
def no_jax(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now fails


def _opts(**changes) -> dict:
    opts = {"hidden": (8,), "z_dim": 2, "batch_size": 32, "lr": 1e-2, "device": "cpu", "seed": 0}
    return opts | {"estimator": "trace", "binarize": "dynamic"} | changes


def test_step_flops_are_counted_as_by_hand():
    # the brief's MLP 784-400-50, batch 128: 3 x 2 x 128 x (784 400 + 400 100 + 50 400 + 400 784)
    assert step_matmul_flops(784, (400,), 50, 128) == 527_769_600
    # encoder 10-6-4-(2 x 2): 60 + 24 + 16 = 100; decoder 2-4-6-10: 8 + 24 + 60 = 92, seen
    # by 3 images x 5 particles
    assert step_matmul_flops(10, (6, 4), 2, batch=3, particles=5) == 6 * 3 * (100 + 5 * 92)
    # 7 images in batches of 3: two full steps and one of a single image
    full, last = step_matmul_flops(10, (6, 4), 2, 3, 5), step_matmul_flops(10, (6, 4), 2, 1, 5)
    assert epoch_matmul_flops(7, 3, 10, (6, 4), 2, particles=5) == 2 * full + last
    assert epoch_matmul_flops(6, 3, 10, (6, 4), 2) == 2 * step_matmul_flops(10, (6, 4), 2, 3)


def test_the_matmul_peak_is_a_positive_rate():
    peak = matmul_peak_gflops(torch.device("cpu"), n=64, repeats=2)
    assert 0 < peak < 1e6


def test_particles_and_grad_go_where_they_apply():
    assert estimator_options("trace", 50, "standard") == {"particles": None, "grad": None}
    assert estimator_options("iwae", 5, "dreg") == {"particles": 5, "grad": "dreg"}
    assert estimator_options("renyi", 50, "standard") == {"particles": 50, "grad": None}
    with pytest.raises(ValueError, match="--particles does not apply to --estimator trace"):
        estimator_options("trace", 5, "standard")
    with pytest.raises(ValueError, match="--grad does not apply to --estimator renyi"):
        estimator_options("renyi", 50, "dreg")


def test_without_jax_the_numpyro_paths_are_skipped_with_a_line(no_jax):
    paths, skipped = choose_paths(None, _opts())
    assert f"numpyro-scan, numpyro-step skipped: {NO_JAX}" in skipped
    assert "numpyro-scan" not in paths and "hand-written" in paths


def test_without_jax_the_report_says_what_was_skipped(
    tmp_path, no_jax, small_peak, monkeypatch, capsys
):
    few = {k: PATHS[k] for k in ("hand-written", "numpyro-scan", "numpyro-step")}
    monkeypatch.setattr(bench_paths, "PATHS", few)  # the default set: all paths there are
    code = compare.main(["--dataset", "mnist-sample", "--rounds", "1", "--hidden",
                 "8", "--z-dim", "2", "--max-other-load", "1", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    line = f"numpyro-scan, numpyro-step skipped: {NO_JAX}"
    assert line in capsys.readouterr().out
    assert line in (tmp_path / "benchmark.md").read_text()
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert list(report["paths"]) == ["hand-written"] and report["skipped"] == [line]
    assert "jax" not in report["machine"]


def test_a_numpyro_path_named_without_jax_is_refused(tmp_path, no_jax, capsys):
    code = compare.main(["--dataset", "mnist-sample", "--paths", "hand-written",
                 "numpyro-step", "--out", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert f"numpyro-step cannot run: {NO_JAX}" in capsys.readouterr().err
    assert not (tmp_path / "benchmark.json").exists()


def test_numpyro_paths_are_left_out_of_an_iwae_run_and_refused_there():
    paths, skipped = choose_paths(None, _opts(estimator="iwae"))
    why = "NumPyro's paths train by Trace_ELBO only, not --estimator iwae"
    assert f"numpyro-scan, numpyro-step skipped: {why}" in skipped
    assert "numpyro-scan" not in paths and "pyro-vae" in paths
    with pytest.raises(ValueError, match=f"numpyro-scan cannot run: {why}"):
        choose_paths(["pyro-vae", "numpyro-scan"], _opts(estimator="iwae"))


def test_the_table_gives_rates_and_the_ratio_to_numpyro_scan():
    """The rates and ratios from given timings (no training)."""
    summary = {
        name: {"median_epoch_seconds": seconds, "images_per_second": 100 / seconds}
        for name, seconds in (("hand-written", 2.0), ("numpyro-scan", 4.0), ("pyro-vae", 1.0))
    }
    built = {name: object() for name in summary}
    data = ImageData(torch.rand(100, 10), torch.zeros(100), torch.rand(5, 10), torch.zeros(5))
    compare._add_rates(summary, built, data, _opts(hidden=(6, 4)), peak=2.0)
    flops = epoch_matmul_flops(100, 32, 10, (6, 4), 2)
    fast = summary["pyro-vae"]
    assert fast["epoch_matmul_flops"] == flops
    assert fast["achieved_gflops"] == pytest.approx(flops / 1.0 / 1e9)
    assert fast["fraction_of_matmul_peak"] == pytest.approx(fast["achieved_gflops"] / 2.0)
    assert fast["vs_numpyro_scan"] == 0.25 and fast["vs_hand_written"] == 0.5
    for s in summary.values():
        s |= {"epoch_peak_extra_memory_mb": 1.0, "epoch_seconds": [1.0], "clean_epochs": 1}
        s["cores_busy"] = 1.0
    where = {"cpu": "x", "vector_isa": "AVX2", "blas": "mkl", "torch_threads": 1}
    where |= {"matmul_peak_gflops": 2.0, "matmul_peak": {"n": 8, "repeats": 1}}
    config = {"dataset": "d", "num_train": 100, "hidden": (6, 4), "z_dim": 2, "batch_size": 32}
    config |= {"device": "cpu", "rounds": 1, "estimator": "trace"}
    report = {"machine": where, "config": config, "paths": summary, "clean": True}
    md = markdown_report(report)
    assert "cpu (x, AVX2, BLAS mkl, 1 threads, matmul 2 GFLOP/s (float32 8x8 a @ b))" in md
    assert "| GFLOP/s | % of matmul peak | time vs hand-written | time vs numpyro-scan |" in md
    assert f"| {100 * fast['fraction_of_matmul_peak']:.1f}% | 0.50x | 0.25x |" in md
    assert "matmul peak of this machine, measured in this run: 2.0 GFLOP/s" in md
    assert "| speed-up over Trace_ELBO | cores busy |" in md
    del report["paths"]["numpyro-scan"]
    assert "numpyro-scan" not in markdown_report(report)


def test_the_iwae_run_counts_every_particle(tmp_path, small_peak):
    code = compare.main(["--dataset", "mnist-sample", "--rounds", "1", "--hidden",
                 "8", "--z-dim", "2", "--batch-size", "500", "--estimator", "iwae",
                 "--particles", "3", "--grad", "dreg", "--paths", "pyro-vae", "hand-written",
                 "pyro-trace-elbo", "--max-other-load", "1", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["config"]["particles"] == 3 and report["config"]["grad"] == "dreg"
    paths = report["paths"]
    for name, particles in (("pyro-vae", 3), ("hand-written", 3), ("pyro-trace-elbo", 1)):
        want = epoch_matmul_flops(4000, 500, 784, (8,), 2, particles)
        assert paths[name]["epoch_matmul_flops"] == want, name
    assert report["machine"]["matmul_peak_gflops"] > 0
    assert report["machine"]["matmul_peak"]["n"] == 128  # (small_peak)
    # a share of the cores, not how large: the suite's other worker may hold them meanwhile
    assert all(0 < p["cores_busy"] <= os.cpu_count() + 0.5 for p in paths.values())
    md = (tmp_path / "benchmark.md").read_text()
    assert "--estimator iwae --particles 3 --grad dreg" in md and "| % of matmul peak |" in md
    assert f"cpu ({machine_line(report['machine'])})" in md


def _tiny_data(n: int = 70) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g)
    return ImageData(x, torch.zeros(n), x[:5], torch.zeros(5))


def test_the_numpyro_paths_train_alike():
    """Both paths (one test: most of the time goes to importing JAX and compiling) start from
    nn.Linear's initialisation, change every parameter, lower the loss, and, with the same
    keys, train the same epochs whether scanned or stepped from Python."""
    pytest.importorskip("numpyro")
    import numpy as np

    losses = {}
    for name in ("numpyro-scan", "numpyro-step"):
        path = PATHS[name][1](_tiny_data(), _opts())  # 70 images: batches of 32, 32 and 6
        before = {k: np.asarray(v) for k, v in path.params().items()}
        losses[name] = [path.epoch() for _ in range(3)]
        after = path.params()
        assert all(not np.allclose(before[k], np.asarray(after[k])) for k in before), name
    assert before["enc_w1"].shape == (8, 4) and before["dec_w1"].shape == (8, 784)
    bound = 784**-0.5  # nn.Linear's initialisation: uniform in +-1/sqrt(fan_in)
    assert np.abs(before["enc_w0"]).max() <= bound
    assert before["enc_w0"].std() == pytest.approx(bound / 3**0.5, rel=0.05)
    scan, step = losses["numpyro-scan"], losses["numpyro-step"]
    assert np.isfinite(scan).all() and scan[-1] < scan[0]
    np.testing.assert_allclose(step, scan, rtol=1e-4)


def test_the_numpyro_networks_are_the_torch_ones():
    """With the same weights, NumPyro's encoder gives the torch MLPEncoder's (loc, scale) and
    its decoder the MLPDecoder's logits."""
    pytest.importorskip("numpyro")
    import jax
    import numpy as np

    from benchmarks import numpyro_paths as bn
    from pyro_vae.model.nets import NETWORKS

    encoder, decoder = NETWORKS.create("mlp", (784,), 3, hidden=(8, 6))
    key_enc, key_dec = jax.random.split(jax.random.PRNGKey(0))
    init_layers = jax.jit(bn.init_layers, static_argnums=(1, 2))
    params = init_layers(key_enc, (784, 8, 6, 6), "enc")
    params |= init_layers(key_dec, (3, 6, 8, 784), "dec")
    for prefix, net in (("enc", encoder), ("dec", decoder)):
        linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for i, linear in enumerate(linears):
                linear.weight.copy_(torch.tensor(np.asarray(params[f"{prefix}_w{i}"]).T))
                linear.bias.copy_(torch.tensor(np.asarray(params[f"{prefix}_b{i}"])))
    x, z = torch.rand(5, 784), torch.randn(5, 3)
    loc, scale = jax.jit(bn.encode, static_argnums=1)(params, 3, x.numpy())
    logits = jax.jit(bn.mlp, static_argnums=(1, 2))(params, "dec", 3, z.numpy())
    with torch.no_grad():
        want_loc, want_scale = encoder(x)
        want_logits = decoder(z)
    for got, want in ((loc, want_loc), (scale, want_scale), (logits, want_logits)):
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-4, atol=1e-5)


def test_the_iwae_options_reach_the_pyro_vae_and_hand_written_paths():
    from pyro_vae.inference import IWAE

    opts = _opts(estimator="iwae", particles=3, grad="dreg")
    pyro_vae = PATHS["pyro-vae"][1](_tiny_data(), opts)
    objective = pyro_vae.trainer.parts.estimator
    assert isinstance(objective, IWAE) and objective.num_particles == 3
    assert objective.grad == "dreg" and pyro_vae.samples_per_image == 3
    by_hand = PATHS["hand-written"][1](_tiny_data(), opts).model
    assert (by_hand.particles, by_hand.grad) == (3, "dreg")
    plain = PATHS["hand-written"][1](_tiny_data(), _opts(particles=None, grad=None))
    assert plain.model.particles is None and plain.samples_per_image == 1


def test_the_numpyro_paths_refuse_cuda():
    pytest.importorskip("numpyro")
    with pytest.raises(ValueError, match="run on the CPU only"):
        PATHS["numpyro-scan"][1](_tiny_data(), _opts(device="cuda"))


def test_the_machine_is_named_with_its_vector_isa_and_blas():
    """A timing holds only beside a peer on the same machine: the report names the CPU, the
    vector ISA torch dispatches to and the BLAS it was built with."""
    from benchmarks.machine import machine_info

    info = machine_info(torch.device("cpu"))
    assert info["vector_isa"] == torch.backends.cpu.get_cpu_capability()
    assert info["blas"] != "unknown" and f"BLAS_INFO={info['blas']}" in torch.__config__.show()
