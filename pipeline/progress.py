"""Progress where a person waits: one helper for every bar in mesodata.

On a terminal (stderr is a TTY) it is a tqdm bar with the count, the rate and the ETA. Otherwise it
draws nothing: it stays quiet, or, where a command's log should show that work goes on (the
runner's units, a download, an epoch), writes a plain log line at most every `log_every` seconds
or each time another 1/`log_steps` of the total is done.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["Progress", "track", "human_bytes"]

log = logging.getLogger("mesodata")
T = TypeVar("T")


def human_bytes(n: float) -> str:
    """Bytes for people: `812 B`, `4.7 KiB`, `1.2 GiB`."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


class Progress:
    """A count of `total` `unit`s (None: unknown), shown as a bar on a terminal.

    `enabled` forces the bar on or off (default: on when stderr is a terminal). Without a bar, plain
    log lines come every `log_every` seconds and/or at each `log_steps`-th of the total (None and
    None: no line at all); `binary` counts bytes (KiB, MiB)."""

    def __init__(self, total: float | None, desc: str, unit: str = "it", *, binary: bool = False,
                 leave: bool = True, enabled: bool | None = None, log_every: float | None = None,
                 log_steps: int | None = None) -> None:
        self.total, self.desc, self.unit, self.binary = total, desc, unit, binary
        self.n = 0
        self.postfix = ""
        self.log_every = log_every
        self._step = max(1, int(total) // log_steps) if log_steps and total else None
        self._next_step = self._step
        self.started = self._last_line = time.monotonic()
        self._closed = False
        self.bar = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=binary, unit_divisor=1024 if binary else 1000,
                            leave=leave, dynamic_ncols=True)

    # --- counting ----------------------------------------------------------------------------
    def update(self, n: float = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        if self.bar is not None:
            if postfix is not None:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(n)
        elif self._step is not None and self.n >= self._next_step:
            while self._next_step <= self.n:
                self._next_step += self._step
            if self.n < self.total and self.total - self.n < self._step:
                self._next_step = self.total  # the last line says the total
            self._log_line()
        elif self.log_every is not None and time.monotonic() - self._last_line >= self.log_every:
            self._log_line()

    def set_total(self, total: float | None) -> None:
        """The total changed (e.g. a download's size became known)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def set_postfix(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def write(self, message: str, level: int = logging.INFO) -> None:
        """A line of its own: above the bar on a terminal, a log record otherwise."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            log.log(level, message)

    # --- what it says ------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """A bar is drawn (stderr is a terminal, or the bar was asked for)."""
        return self.bar is not None

    @property
    def rate(self) -> float:
        return self.n / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None when the total or the rate is unknown."""
        if self.total is None or not self.n:
            return None
        return max(self.total - self.n, 0) / self.rate

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self.binary else f"{n:g}"

    def line(self) -> str:
        """'desc: 12/40 units (3.1/s, ETA 9 s)': what a log line says."""
        done = self._amount(self.n) + (f"/{self._amount(self.total)}" if self.total is not None else "")
        done += "" if self.binary else f" {self.unit}"
        rate = f"{human_bytes(self.rate)}/s" if self.binary else f"{self.rate:.1f}/s"
        eta = self.eta
        tail = f", ETA {eta:.0f} s" if eta is not None and self.total is not None and self.n < self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {done} ({rate}{tail}){extra}"

    def _log_line(self) -> None:
        self._last_line = time.monotonic()
        log.info("%s", self.line())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], total: float | None, desc: str, unit: str = "it", *,
          weight: Callable[[T], float] | None = None, **options) -> Iterator[T]:
    """Yield `items`, counting each (or its `weight`, e.g. a batch's rows) on a `Progress`."""
    with Progress(total, desc, unit, **options) as bar:
        for item in items:
            yield item
            bar.update(weight(item) if weight is not None else 1)
