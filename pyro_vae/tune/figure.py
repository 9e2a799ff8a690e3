"""OUT/tune.png: how the search went and what mattered. Left, the optimization history: each
complete trial's value (± the standard deviation of its replicates) by trial number, the best
so far as a line, pruned trials at the last value they reported. Right, the importance of each
searched option (Optuna's ``optuna.importance.get_param_importances``, which needs at least
two complete trials; with fewer the panel says so)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..report.plots import plt
from ..training.atomic_files import atomic_write
from .optuna_import import optuna_module


def importances(study: Any) -> tuple[dict[str, float], str]:
    """Each searched option's share of the variation in the value, and '' (or no shares and
    the reason why not)."""
    complete = [r for r in study.get_trials(deepcopy=False) if r.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}, f"importance needs 2 complete trials ({len(complete)} so far)"
    optuna = optuna_module()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few trials: the evaluator's caveats
            return dict(optuna.importance.get_param_importances(study)), ""
    except (ValueError, RuntimeError, ImportError) as err:
        return {}, f"importance not measured: {' '.join(str(err).split())}"


def _history(
    ax: Any, rows: list[dict[str, Any]], last: dict[int, float], objective: str, maximize: bool
) -> None:
    done = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["trial"])
    if done:
        numbers, values = [r["trial"] for r in done], [r["value"] for r in done]
        errors = [r["sd"] or 0.0 for r in done]
        ax.errorbar(numbers, values, yerr=errors, fmt="o", color="C0", label="complete")
        pick = max if maximize else min
        best = [pick(values[: i + 1]) for i in range(len(values))]
        ax.step(numbers, best, where="post", color="C1", label="best so far")
    pruned = [r["trial"] for r in rows if r["state"] == "pruned" and r["trial"] in last]
    if pruned:
        ax.scatter(pruned, [last[n] for n in pruned], marker="x",
                   color="0.5", label="pruned (last report)")  # fmt: skip
    if not done and not pruned:
        ax.text(0.5, 0.5, "no trial has finished yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("trial")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # trials are whole
    ax.set_ylabel(objective + (" (higher is better)" if maximize else " (lower is better)"))
    ax.set_title("optimization history")
    if done or pruned:
        ax.legend(fontsize=8)


def _importance(ax: Any, shares: dict[str, float], why_not: str) -> None:
    ax.set_title("importance of each option")
    if not shares:
        ax.text(0.5, 0.5, why_not, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = list(shares)[::-1]  # the most important on top
    bars = ax.barh(names, [shares[n] for n in names], color="C2")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
    ax.set_xlabel("share of the variation in the value")
    ax.set_xlim(0, 1.1)


def draw_study(study: Any, rows: list[dict[str, Any]], objective: str, path: Path) -> Path:
    """Draw the figure of ``study`` (its ``rows``, :func:`pyro_vae.tune.summary.trial_rows`)
    to ``path``, written atomically."""
    maximize = study.direction.name == "MAXIMIZE"
    # what a trial reported last (log_px's trials report the test ELBO, a bound on it)
    last = {
        t.number: t.intermediate_values[t.last_step]
        for t in study.get_trials(deepcopy=False)
        if t.last_step is not None
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=(1.4, 1))
    try:
        _history(left, rows, last, objective, maximize)
        _importance(right, *importances(study))
        fig.tight_layout()
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)
    return Path(path)
