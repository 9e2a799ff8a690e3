"""The benchmark's report (benchmark.json) written as Markdown: one row per path, with the ratios
to the baselines the report computed."""

from __future__ import annotations

from collections.abc import Callable

from pyro_vae.studies.tables import markdown_table

from .log_likelihood_eval import eval_markdown
from .machine import machine_line
from .paths import PATHS


def _ratio(key: str) -> Callable[[dict], str]:
    return lambda r: "–" if r.get(key) is None else f"{r[key]:.2f}x"


def _objective(c: dict) -> str:
    """The pyro-vae paths' objective, as the flags that chose it."""
    flags = [f"--estimator {c['estimator']}"]
    flags += [f"--{k} {c[k]}" for k in ("particles", "grad") if c.get(k) is not None]
    return " ".join(flags)


def _columns(report: dict) -> list:
    vs_numpyro = [("", "time vs numpyro-scan", _ratio("vs_numpyro_scan"))]
    return [
        ("path", "path", ""),
        ("median_epoch_seconds", "s/epoch", ".3f"),
        ("images_per_second", "images/s", ".0f"),
        ("achieved_gflops", "GFLOP/s", ".1f"),
        ("", "% of matmul peak", lambda r: f"{100 * r['fraction_of_matmul_peak']:.1f}%"),
        ("", "time vs hand-written", _ratio("vs_hand_written")),
        *(vs_numpyro if "numpyro-scan" in report["paths"] else []),
        ("", "speed-up over Trace_ELBO", _ratio("speedup_over_trace_elbo")),
        ("cores_busy", "cores busy", ".1f"),
        ("epoch_peak_extra_memory_mb", "epoch's extra peak memory (MB)", ".0f"),
        ("", "clean epochs", lambda r: f"{r['clean_epochs']}/{len(r['epoch_seconds'])}"),
    ]


def markdown_report(report: dict) -> str:
    """The benchmark's report as Markdown: what was timed and where, a row per path, the
    machine's matmul peak, the paths left out and why, and whether it is contaminated."""
    c, m = report["config"], report["machine"]
    peak, gflops = m["matmul_peak"], m["matmul_peak_gflops"]
    header = (
        f"{c['dataset']} ({c['num_train']} training images), MLP 784-"
        f"{'-'.join(map(str, c['hidden']))}-{c['z_dim']}, batch {c['batch_size']}, "
        f"{c['device']} ({machine_line(m)}), "
        f"median of the clean epochs among {c['rounds']} alternating ones, denormals "
        f"{'flushed' if c.get('denormals', 'keep') == 'flush' else 'kept'} on every path; "
        f"the pyro-vae{' and hand-written' * (c['estimator'] == 'iwae')} paths train by "
        f"{_objective(c)}"
    )
    rows = [{"path": PATHS[name][0], **p} for name, p in report["paths"].items()]
    text = markdown_table(header, _columns(report), rows)
    text += (
        f"\nmatmul peak of this machine, measured in this run: {gflops:.1f} GFLOP/s "
        f"(float32 {peak['n']}x{peak['n']} `a @ b`, best of {peak['repeats']}); a path's "
        "GFLOP/s count the matrix products of its steps, forward and backward\n"
    )
    text += "".join(f"\n{line}\n" for line in report.get("skipped", []))
    if "log_likelihood_eval" in report:
        text += "\n" + eval_markdown(report["log_likelihood_eval"])
    if not report["clean"]:
        text += "\nCONTAMINATED: other processes used the CPU during most epochs of a path.\n"
    return text
