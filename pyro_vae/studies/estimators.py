"""Estimator comparison: one architecture trained with each objective and beta, then measured.

    pyro-vae study estimators --dataset mnist-sample --epochs 100 --out runs/estimators

For each estimator (Trace_ELBO, TraceMeanField_ELBO, IWAE k=5 and k=50 with standard and DReG
gradients, and the rest of the bound family: VR-0.5, MIWAE, PIWAE, CIWAE) and each beta it
trains a run (``OUT/<estimator>-beta<b>``), evaluates its test log p(x) with K importance
samples and, with ``--ais-steps T``, by AIS on the same images (IS - AIS per cell, and each
estimator's rank by either: does a tighter evaluation reorder them? Wu et al., 2017), and
writes ``estimators.json``, ``estimators.md`` and ``estimators.png``. Finished runs and
evaluations are reused and stopped runs resumed, so a long study that is killed picks up where
it was.

The architecture is the built-in VAE (``--likelihood`` and ``--prior`` choose its parts) or the
user's own, ``--model MODULE:FACTORY``, with ``--plugin`` for modules that register parts. The
options of the user's parts and any training option the study has no flag for are ``--set
NAME=VALUE`` (``--set channels=16``); the study's sizes (``--z-dim``, ``--hidden``) go only to a
model that takes them, and an option given where it does not apply is refused before any run
trains. Each run records the user's modules, as ``pyro-vae train`` does, so that reusing,
resuming and evaluating it work.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..inference.annealing import AnnealingSettings
from ..report.plots import plt
from ..training import TrainConfig, options
from ..training.schema import ConfigError, flag_of
from ..training.user_code import prepare_training
from .harness import (
    at_least,
    measure_arguments,
    option_help,
    run_arguments,
    sizes_where_they_apply,
    study,
    study_metadata,
    train_and_measure,
)
from .tables import of_total, plus_minus, write_tables


@dataclass(frozen=True)
class Estimator:
    label: str
    name: str
    particles: int = 1
    grad: str = "standard"
    options: tuple[tuple[str, float], ...] = ()  # the estimator's other options (alpha, groups)

    @property
    def slug(self) -> str:
        return self.label.lower().replace(" ", "-").replace("=", "")


ESTIMATOR_SET = [
    Estimator("Trace_ELBO", "trace"),
    Estimator("TraceMeanField_ELBO", "mean-field"),
    Estimator("IWAE k=5", "iwae", 5),
    Estimator("IWAE k=5 DReG", "iwae", 5, "dreg"),
    Estimator("IWAE k=50", "iwae", 50),
    Estimator("IWAE k=50 DReG", "iwae", 50, "dreg"),
    Estimator("VR-0.5 k=5", "renyi", 5, options=(("alpha", 0.5),)),
    Estimator("MIWAE M=4 k=5", "miwae", 5, options=(("groups", 4),)),
    Estimator("PIWAE M=4 k=5", "piwae", 5, options=(("groups", 4),)),
    Estimator("CIWAE 0.5 k=5", "ciwae", 5, options=(("ciwae_mix", 0.5),)),
]


def compare(
    dataset: str = "mnist-sample",
    epochs: int = 100,
    betas: Sequence[float] = (0.5, 1.0, 4.0),
    estimators: Sequence[Estimator] = tuple(ESTIMATOR_SET),
    out: str | Path = "runs/estimators",
    num_samples: int = 5000,
    max_images: int | None = None,
    annealing: AnnealingSettings | None = None,
    *,
    model: str = "vae",
    plugins: Sequence[str] = (),
    **train_options: Any,
) -> list[dict[str, Any]]:
    """Train and evaluate every estimator x beta (with ``annealing``, also by AIS); returns
    the table rows (also written).

    ``model``: a built-in model (``vae``, whose parts ``likelihood=``, ``prior=``, ... choose)
    or ``"MODULE:FACTORY"``, the user's factory; ``plugins``: modules that register parts
    (``["my_parts.py"]``), imported first. ``train_options`` are any training options
    (``hidden=(200, 200)``, ``z_dim=50``) and the options of the user's parts
    (``channels=16``), each refused where it does not apply, for every run before the first
    one trains."""
    prepare_training(plugins, model)
    out = Path(out)
    given = {k: v for k, v in train_options.items() if v is not None}
    cells = [
        (beta, est, _config(model, dataset, epochs, beta, est, out, given))
        for beta in betas
        for est in estimators
    ]
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(dataset, given.get("data_dir"))
    meta = {"model": model, **({"plugins": list(plugins)} if plugins else {}), **given}
    rows = []
    for beta, est, config in cells:
        measured = train_and_measure(config, data, num_samples, max_images, annealing)
        rows.append({"estimator": est.label, "beta": beta, **measured})
        _write(out, _ranked(rows), dataset, epochs, num_samples, max_images, meta)
    _figure(rows, out / "estimators.png", dataset)
    return _ranked(rows)


def _config(
    model: str,
    dataset: str,
    epochs: int,
    beta: float,
    est: Estimator,
    out: Path,
    given: dict[str, Any],
) -> TrainConfig:
    """The run of one cell. An option given that does not apply to the model is refused, even
    at its default value: it was asked for (a factory takes ``z_dim`` only if it has it as an
    option, and ``hidden`` never)."""
    config = TrainConfig.of(
        model=model,
        dataset=dataset,
        epochs=epochs,
        beta=beta,
        estimator=est.name,
        particles=est.particles,
        grad=est.grad,
        out=str(out / f"{est.slug}-beta{beta:g}"),
        **dict(est.options),
        **given,
    )
    for name in given:
        if name in options() and getattr(config, name) is None:
            raise ConfigError(config.why_not(name))
    return config


def _ranked(rows: list[dict]) -> list[dict]:
    """Each row with its estimator's rank among the rows of its beta by IS log p(x) and, where
    measured, by AIS (1: the highest)."""
    ranked = [dict(r) for r in rows]
    for key, rank in [("test_log_likelihood", "rank_is"), ("test_log_likelihood_ais", "rank_ais")]:
        for beta in {r["beta"] for r in ranked}:
            cell = [r for r in ranked if r["beta"] == beta and key in r]
            for i, r in enumerate(sorted(cell, key=lambda r: -r[key])):
                r[rank] = i + 1
    return ranked


def _write(
    out: Path,
    rows: list[dict],
    dataset: str,
    epochs: int,
    num_samples: int,
    max_images: int | None,
    settings: dict,
) -> None:
    meta = {
        **study_metadata(dataset, epochs, num_samples, max_images),
        **{k: v for k, v in settings.items() if k != "progress"},
    }
    write_tables(
        out,
        "estimators",
        meta,
        rows,
        f"{dataset}, {epochs} epochs, "
        + ", ".join(f"{k}={v}" for k, v in meta.items() if k not in ("dataset", "epochs")),
        [
            ("estimator", "estimator", ""),
            ("beta", "beta", "g"),
            ("test_neg_elbo", "test -ELBO", ".2f"),
            ("", f"test log p(x) (K={num_samples})", plus_minus(
                "test_log_likelihood", "test_log_likelihood_stderr"
            )),
            ("", "active units", of_total("active_units", "z_dim")),
            ("seconds_per_epoch", "s/epoch", ".2f"),
        ] + ([
            ("", "test log p(x) (AIS)", plus_minus(
                "test_log_likelihood_ais", "test_log_likelihood_ais_stderr"
            )),
            ("is_minus_ais", "IS - AIS", "+.2f"),
            ("rank_is", "rank (IS)", ""),
            ("rank_ais", "rank (AIS)", ""),
        ] if any("test_log_likelihood_ais" in r for r in rows) else []),
    )  # fmt: skip


def _figure(rows: list[dict], path: Path, dataset: str) -> None:
    """Test log p(x) and test -ELBO per estimator, a bar per beta (over replicates: the mean,
    with ± sd bars)."""
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    betas = list(dict.fromkeys(r["beta"] for r in rows))
    width = 0.8 / len(betas)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, key, title in [
        (axes[0], "test_log_likelihood", "test log p(x) (K importance samples), higher is better"),
        (axes[1], "test_neg_elbo", "test -ELBO, lower is better"),
    ]:
        sd = f"{key}_sd"  # over replicates
        bars = {"yerr": [], "capsize": 3} if any(sd in r for r in rows) else {}
        for j, beta in enumerate(betas):
            cells = [
                next((r for r in rows if r["estimator"] == lab and r["beta"] == beta), {})
                for lab in labels
            ]
            if bars:
                bars["yerr"] = [c.get(sd, 0.0) for c in cells]
            ax.bar(
                [i + (j - (len(betas) - 1) / 2) * width for i in range(len(labels))],
                [c.get(key, math.nan) for c in cells],
                width,
                label=f"beta={beta:g}",
                **bars,
            )
        finite = [r[key] + e * r.get(sd, 0.0) for r in rows for e in (-1, 1)]
        finite = [v for v in finite if math.isfinite(v)]
        lo, hi = min(finite), max(finite)
        ax.set_ylim(lo - 0.15 * (hi - lo) - 1, hi + 0.15 * (hi - lo) + 1)
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("nats per image")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"estimator comparison on {dataset}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ARCHITECTURE = {"z_dim": 50, "hidden": (200, 200)}  # Burda et al.'s 784-200-200-50 MLP
# options each estimator's run sets, and the study's own flags for the others it sets
SET_BY_ESTIMATOR = ("estimator", "particles", "grad", "alpha", "groups", "ciwae_mix")
OWN_FLAGS = ("dataset", "data_dir", "epochs", "z_dim", "hidden", "seed", "device", "out",
             "batch_size", "lr", "model", "likelihood", "prior")  # fmt: skip
STUDY_FLAGS = {"beta": "--betas", "progress": "--no-progress"} | {n: flag_of(n) for n in OWN_FLAGS}


def _arguments(p: argparse.ArgumentParser) -> None:
    run_arguments(p, "runs/estimators", epochs=100, where_they_apply=True, **ARCHITECTURE)
    measure_arguments(p)
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 4.0],
        metavar="BETA",
        help="the KL weights each estimator is trained with",
    )
    p.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        metavar="SLUG",
        help="the estimators to compare, a subset of: "
        + ", ".join(e.slug for e in ESTIMATOR_SET)
        + " (default: all)",
    )
    p.add_argument(
        "--ais-steps",
        type=at_least(1),
        default=None,
        metavar="T",
        help="also measure log p(x) by AIS with T annealing steps (8 chains, 2 leapfrog steps), "
        "on the same images as IS (default: IS only)",
    )
    p.add_argument("--batch-size", type=int, default=128, help=option_help("batch_size"))
    p.add_argument("--lr", type=float, default=1e-3, help=option_help("lr"))
    model = p.add_argument_group("the model (the built-in vae, or your own)")
    model.add_argument(
        "--model",
        default="vae",
        metavar="NAME|MODULE:FACTORY",
        help=option_help(
            "model",
            "a built-in model, or MODULE:FACTORY: your own, built by "
            "FACTORY(data_shape, **options) (docs/your-model.md)",
        ),
    )
    model.add_argument("--likelihood", default=None, metavar="NAME", help=option_help("likelihood")
                       + " (default: bernoulli, for a model that takes it)")  # fmt: skip
    model.add_argument("--prior", default=None, metavar="NAME", help=option_help("prior")
                       + " (default: normal, for a model that takes it)")  # fmt: skip
    model.add_argument(
        "--set",
        action="append",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="an option of your parts (--set channels=16, a factory's; --set df=3, a plug-in "
        "prior's) or any other training option (--set sigma=0.05), for every run; VALUE is read "
        "as JSON where it can be (0.05, [64, 64], true), else as text; repeatable",
    )


def _setting(text: str) -> tuple[str, Any]:
    """``--set NAME=VALUE``: the option's name (``z2-dim`` is ``z2_dim``) and its value, read as
    JSON where it can be."""
    name, sep, value = text.partition("=")
    name = name.strip().removeprefix("--").replace("-", "_")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"NAME=VALUE, such as sigma=0.05; got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of every run that the model flags give: ``--likelihood``, ``--prior`` and
    ``--set``. One that the study sets itself, or given twice, is refused."""
    chosen = {k: getattr(args, k) for k in ("likelihood", "prior") if getattr(args, k)}
    for name, value in args.set:
        if name in SET_BY_ESTIMATOR:
            raise ValueError(f"--set {name}: each estimator sets it (choose with --estimators)")
        if name in STUDY_FLAGS:
            raise ValueError(f"--set {name}: the study sets it: give it as {STUDY_FLAGS[name]}")
        if name in ("plugins", "part_options"):
            raise ValueError(f"--set {name}: not an option (--plugin names your modules)")
        if name in chosen:
            raise ValueError(f"--set {name}: given twice")
        chosen[name] = value
    return chosen


def _figure_over_replicates(tables: dict[str, list[dict]], args: argparse.Namespace) -> None:
    _figure(tables["estimators"], Path(args.out) / "estimators.png", args.dataset)


@study(
    "estimators",
    "one architecture trained with each estimator and beta, compared by test log p(x)",
    _arguments,
    _figure_over_replicates,
)
def run(args: argparse.Namespace) -> int:
    chosen = ESTIMATOR_SET
    if args.estimators:
        known = {e.slug: e for e in ESTIMATOR_SET}
        unknown = [slug for slug in args.estimators if slug not in known]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; choose from {list(known)}")
        chosen = [known[slug] for slug in args.estimators]
    parts = model_options(args)
    sizes = sizes_where_they_apply(
        {"z_dim": args.z_dim, "hidden": tuple(args.hidden) if args.hidden else None},
        ARCHITECTURE,
        model=args.model,
        dataset=args.dataset,
        **parts,
    )
    compare(
        dataset=args.dataset,
        epochs=args.epochs,
        betas=args.betas,
        estimators=chosen,
        out=args.out,
        num_samples=args.num_samples,
        max_images=args.max_eval_images,
        annealing=None if args.ais_steps is None else AnnealingSettings(num_steps=args.ais_steps),
        model=args.model,
        plugins=args.plugin,
        data_dir=args.data_dir,
        **sizes,
        **parts,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print((Path(args.out) / "estimators.md").read_text())
    return 0
