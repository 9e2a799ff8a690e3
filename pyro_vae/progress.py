"""Progress of long work (training, evaluation, studies), shown where it is read.

On a terminal it is a tqdm bar, redrawn at most every ``interval`` seconds. Anywhere else (a log
file, a pipe, a CI console) a bar's frames would pile up as one endless line, so the same
progress is written as plain lines instead: one every ``every`` seconds while the work runs and
one when it ends. Values shown beside the count (a loss, images per second) are given as a
function and computed only when something is drawn: reading a loss from a tensor is a host
synchronisation on a GPU, which must not happen at every step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

Fields = Callable[[], str]


def on_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``total`` units of work (``initial`` of them done), reported to ``stream`` (stderr).

    ``advance(n, fields)`` counts work done; ``fields()`` returns the text shown beside the
    count and is called only when a bar frame or a line is due. ``write`` puts a message above
    the bar (or in the log) without breaking it. ``enabled=False`` shows nothing.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "batch",
        *,
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.1,
        every: float = 10.0,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.count = self._drawn = initial
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = enabled and on_terminal(self.stream)
        self.interval = interval if self.terminal else every
        self._start = time.monotonic()
        self._next = self._start + self.interval
        self._bar: tqdm | None = None
        if self.terminal:
            # redrawn only when advance() says so (mininterval 0): our clock, not tqdm's
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.stream,
                mininterval=0,
                miniters=1,
                dynamic_ncols=True,
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def advance(self, n: int = 1, fields: Fields | None = None) -> None:
        """``n`` more units done; draw if the last drawing is ``interval`` seconds old."""
        self.count += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            self._draw(fields)

    def _draw(self, fields: Fields | None) -> None:
        text = fields() if fields is not None else ""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(self.count - self._drawn)
        else:
            self.write(self.line(text))
        self._drawn = self.count

    def line(self, text: str = "") -> str:
        """The plain line for the count so far: 'desc: 12/32 batches (38%), text, 0:05'."""
        share = f" ({self.count / self.total:.0%})" if self.total else ""
        count = f"{self.count}/{self.total} {self.unit}{'es' if self.unit.endswith('h') else 's'}"
        return (
            f"{self.desc}: {count}{share}"
            + (f", {text}" if text else "")
            + (f", {_clock(self.elapsed)} elapsed")
        )

    def write(self, message: str) -> None:
        """A message of its own line, above the bar on a terminal."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self, fields: Fields | None = None) -> None:
        """The final count (a last line in a log, unless ``fields`` is None and nothing has
        changed since the last line)."""
        if not self.enabled:
            return
        if self._bar is not None:
            if fields is not None:
                self._bar.set_postfix_str(fields(), refresh=False)
            self._bar.update(self.count - self._drawn)
            self._bar.close()
            self._bar = None
        elif fields is not None or self.count != self._drawn:
            self._draw(fields)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
