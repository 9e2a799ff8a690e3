"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``, ``report``, ``study``,
``tune``.

``train``'s flags are the training options (:mod:`pyro_vae.training.options`), each declared
once there; this module only turns them into argparse flags. Errors a user can fix (a
mistyped name, a value out of range, an option that does not apply, missing data, a run
directory in the way) print one line and exit with status 2 before anything starts;
``--debug`` shows the traceback instead. A non-finite loss exits with 3; a file of the run
that cannot be written (no space left, a file-size limit) exits with 4, naming the file, what
is left whole and the command that finishes the job; SIGINT/SIGTERM save a checkpoint and exit
with 130/143.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__, plugins
from .config_file import (
    add_config,
    apply_config_file,
    command_parser,
    config_path,
    read_config_file,
)
from .evaluate import add_evaluate, check_seed, evaluate
from .help import CommandParser
from .plugin_flags import add_plugin, early_plugins
from .train_flags import add_train, option_groups, print_config, train_config
from .tune import add_tune, tune

if TYPE_CHECKING:
    from ..training.atomic_files import RunFileError

EXIT_USAGE, EXIT_NON_FINITE, EXIT_NOT_WRITTEN = 2, 3, 4
MAX_SAMPLES = 10_000  # a 100 x 100 grid; more is a job for the Python API


def _train(args: argparse.Namespace) -> int:
    from ..training.banner import reference_line
    from ..training.distributed import leave_worker_process
    from ..workflow import train

    if args.print_config:
        return print_config(args)
    config = train_config(args)
    result = train(config, plugins=args.plugin, resume=args.resume, overwrite=args.overwrite)
    s = result.summary
    if not s:  # a process other than rank 0 of a distributed run: rank 0 reports
        leave_worker_process(0)
    if not config.progress:  # otherwise it was printed before the first step, in the banner
        print(reference_line(s["reference_check"]))
    keys = ["test_neg_elbo", "test_distortion", "test_rate", "train_neg_elbo", "seconds_per_epoch"]
    print(json.dumps({k: round(s[k], 4) for k in keys}))
    print(f"run directory: {config.out}")
    return 0


def _add_sample_and_report(sub: argparse._SubParsersAction) -> None:
    from ..training.option_help import option_help
    from ..training.run_dir import SAMPLES

    what = "decode draws from the prior of a trained run"
    p = sub.add_parser("sample", help=what, description=what[0].upper() + what[1:] + ".")
    p.add_argument("run_dir", help="a run directory written by pyro-vae train")
    p.add_argument("--num", type=int, default=100, help=f"how many samples, 1 to {MAX_SAMPLES}")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument(
        "--out",
        default=None,
        help=f"PNG to write, the tensor beside it as .pt (default: RUN_DIR/{SAMPLES})",
    )
    p.add_argument("--device", default="auto", help=option_help("device"))
    add_plugin(p)
    add_config(p)
    what = "write RUN_DIR/report.html, one self-contained file"
    p = sub.add_parser("report", help=what, description=what[0].upper() + what[1:] + ".")
    add_plugin(p)
    add_config(p)
    p.add_argument("run_dir", help="a run directory written by pyro-vae train")
    p.add_argument(
        "--refresh-figures",
        action="store_true",
        help="redraw the figures from the checkpoint first",
    )
    p.add_argument("--device", default="auto", help=option_help("device"))


def _sample(args: argparse.Namespace) -> int:
    import torch

    from ..report import plots
    from ..training import RunDirectory, load_run, read_config
    from ..training.atomic_files import atomic_write
    from ..training.run_dir import SAMPLES

    if not 1 <= args.num <= MAX_SAMPLES:
        raise ValueError(f"--num must be in [1, {MAX_SAMPLES}], got {args.num}")
    check_seed(args.seed)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / SAMPLES
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {str(out)!r}: {str(out.parent)!r} is not a directory")
    read_config(run_dir)
    inside = out.parent.resolve() == run_dir.resolve()
    # writing into the run directory takes its lock; elsewhere only reads it
    with RunDirectory(run_dir, writes=inside).lock("sample"):
        run = load_run(run_dir, args.device)
        torch.manual_seed(args.seed)
        images = run.vae.sample(args.num).cpu()
        plots.samples(images, run.data.shape, out, per_row=min(10, args.num))
        atomic_write(out.with_suffix(".pt"), lambda f: torch.save(images, f))
    print(f"{args.num} samples from epoch {run.epoch}: {out} (tensor: {out.with_suffix('.pt')})")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..model import ConditionalVAE
    from ..report import figure_names, make_figures, write_report
    from ..training import RunDirectory, load_run, read_config
    from ..training.run_dir import FIGURES, METRICS, read_metrics

    run_dir = RunDirectory(args.run_dir)
    read_config(run_dir.path)
    with run_dir.lock("report"):
        figures = run_dir / FIGURES
        run = None
        missing = ["all"]
        if not args.refresh_figures and figures.is_dir():
            # a run with its image figures is complete; one without checks its data's shape
            missing = [n for n in figure_names((1, 1, 1)) if not (figures / n).exists()]
            if missing:
                run = load_run(run_dir.path, args.device)
                shown = figure_names(run.data.shape, isinstance(run.vae, ConditionalVAE))
                missing = [n for n in shown if not (figures / n).exists()]
        if args.refresh_figures or missing:
            run = run or load_run(run_dir.path, args.device)
            metrics = read_metrics(run_dir / METRICS)
            data = run.data
            run_dir.replace_figures(
                lambda d: make_figures(
                    run.vae, run.test_x, data.test_y, data.shape, metrics, d, str(run_dir.path)
                )
            )
        print(f"report: {write_report(run_dir.path)}")
    return 0


def _add_study(sub: argparse._SubParsersAction) -> None:
    from ..studies import STUDIES

    p = sub.add_parser(
        "study",
        help="run a study: several runs, measured, tabulated, drawn",
        description="Run a study: several runs, measured, tabulated, drawn.",
        epilog="pyro-vae study NAME --help lists a study's options and their defaults.",
    )
    names = p.add_subparsers(dest="study", required=True, title="studies", metavar="NAME")
    for name in STUDIES:
        run = STUDIES.get(name)
        study = names.add_parser(name, help=run.summary, description=run.summary)
        run.arguments(study)
        add_plugin(study)
        add_config(study)


def _study(args: argparse.Namespace) -> int:
    from ..studies import STUDIES

    return STUDIES.get(args.study)(args)


COMMANDS = {
    "train": _train,
    "evaluate": evaluate,
    "sample": _sample,
    "report": _report,
    "study": _study,
    "tune": tune,
}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def parser() -> argparse.ArgumentParser:
    """The command line; each command's and each study's parser shows every option's default
    (:class:`~pyro_vae.cli.help.CommandParser`)."""
    p = CommandParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro models, trained by SVI.",
        epilog="pyro-vae COMMAND --help lists a command's options and their defaults.",
    )
    p.add_argument("--version", action="version", version=f"pyro-vae {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    add_train(sub)
    add_evaluate(sub)
    _add_sample_and_report(sub)
    _add_study(sub)
    add_tune(sub)
    return p


def _stopped(args: argparse.Namespace, signum: int) -> str:
    """What a signal outside the training loop leaves: every file whole."""
    where = getattr(args, "run_dir", None) or getattr(args, "out", None)
    kept = f"; every file in {where!r} is whole (a file being written was not replaced)"
    return f"stopped by {signal.Signals(signum).name} during {args.command}" + (
        kept if where else ""
    )


ONCE = {
    errno.ENOSPC: "once there is space",
    errno.EDQUOT: "once the disk quota allows it",
    errno.EFBIG: "once the file-size limit allows it",
}


def _not_written(args: argparse.Namespace, argv: Sequence[str], err: RunFileError) -> str:
    """Which file could not be written, what is left whole, and the command that finishes
    the job (two lines)."""
    from ..training import TrainConfig
    from ..training.run_dir import FIGURES, find_checkpoint

    path, name = Path(err.filename), errno.errorcode.get(err.errno or 0)
    why = f"{err.strerror} ({name})" if name else str(err.strerror)
    if args.command != "train":
        todo = "run the command again: " + shlex.join(["pyro-vae", *argv])
    else:
        run_dir = Path(args.out or TrainConfig.out)
        out = shlex.quote(str(run_dir))
        if run_dir / FIGURES in (path, path.parent):  # the training is done, and kept
            todo = f"draw the figures: pyro-vae report {out} --refresh-figures"
        elif find_checkpoint(run_dir).exists():
            todo = f"continue the run: pyro-vae train --resume --out {out}"
        else:
            again = [*argv, *([] if "--overwrite" in argv else ["--overwrite"])]
            todo = "start the run again (it had no checkpoint yet): " + shlex.join(
                ["pyro-vae", *again]
            )
    once = ONCE.get(err.errno or 0, "once it can be written")
    return f"could not write {str(path)!r}: {why}\npyro-vae: {err.kept}; {once}, {todo}"


class _ToStderr(logging.Handler):
    """The package's warnings as 'pyro-vae: ...' lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"pyro-vae: {record.getMessage()}", file=sys.stderr)


def _log_to_stderr() -> None:
    log = logging.getLogger("pyro_vae")
    if not any(isinstance(h, _ToStderr) for h in log.handlers):
        log.addHandler(_ToStderr(logging.WARNING))
        log.propagate = False


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line, with a ``--config`` file's options as the defaults of its flags; the
    file's plug-ins and ``MODULE:FACTORY`` model are imported first, as a flag's would be."""
    path = config_path(argv)
    file = read_config_file(path, sections=("search",)) if path else None
    early = list(argv)
    if file is not None:
        early += [arg for spec in file.values.get("plugin", []) for arg in ("--plugin", spec)]
        if "model" in file.values and "--model" not in argv:
            early += ["--model", str(file.values["model"])]
    early_plugins(early)
    root = parser()
    if file is None:
        return root.parse_args(argv)
    command = command_parser(root, argv)
    if command.get_default("reads_config_file"):  # the command reads the file itself (tune)
        args = root.parse_args(argv)
        args.config_file = file
        return args
    if "search" in file.sections:
        raise file.error("search", f"a [search] table is for pyro-vae tune, not {command.prog}")
    flags = vars(root.parse_args(argv))  # what the command line gives, before the file
    set_by_file = apply_config_file(command, file, option_groups())
    args = root.parse_args(argv)
    args.config_file = file
    args.from_file = {
        dest.split(":", 1)[-1] for dest in set_by_file if flags.get(dest) in (None, [], False)
    }
    return args


def _asks_version(argv: Sequence[str]) -> bool:
    """Whether the parser would print the version: ``--version`` (or an abbreviation) before
    the command and before any ``--help``. :func:`main` answers it before importing torch and
    the rest of the package, which the other commands need and the version does not."""
    for arg in argv:
        if arg == "--" or not arg.startswith("-"):
            return False
        if len(arg) > 2 and "--version".startswith(arg):
            return True
        if arg == "-h" or (len(arg) > 2 and "--help".startswith(arg)):
            return False
    return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _asks_version(argv):
        print(f"pyro-vae {__version__}")
        raise SystemExit(0)  # as argparse's version action does
    from ..checks import ReferenceMismatch
    from ..training.atomic_files import RunFileError
    from ..training.stops import (
        NonFiniteLoss,
        Terminated,
        TrainingInterrupted,
        terminate_on_sigterm,
    )

    try:
        args = _parse(argv)
    except (plugins.PluginError, ValueError) as err:  # before anything is read or written
        if "--debug" in argv:
            raise
        print(f"pyro-vae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    _log_to_stderr()
    try:
        with terminate_on_sigterm():
            return COMMANDS[args.command](args)
    except NonFiniteLoss as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_NON_FINITE
    except TrainingInterrupted as stop:
        print(f"pyro-vae: {_one_line(stop)}", file=sys.stderr)
        return 128 + stop.signum
    except RunFileError as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_not_written(args, argv, err)}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    except (ValueError, ReferenceMismatch, OSError) as err:
        if args.debug:
            raise
        print(f"pyro-vae: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated as stop:
        print(f"pyro-vae: {_stopped(args, stop.signum)}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print(f"pyro-vae: {_stopped(args, signal.SIGINT)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
