"""Kill a worker process whose decoder hangs past its deadline.

A decoder spinning or blocked inside C code never returns to Python, so nothing in its own process
can stop it (no signal handler runs, no thread gets the GIL back for sure, a stopped process runs
nothing at all). Only another process can: each worker publishes, in a small file of its own, the
moment at which its current decode is over budget, and the executor's parent process reads those
files and SIGKILLs a worker still over budget a grace period later. The executor then records the
unit as abandoned and carries on with the others.

Worker side (a no-op in a process the executor did not start, e.g. a serial in-process run):
`attach(folder)` once per worker, `begin(ticket)` / `end()` around each unit, `arm(at, seconds)` /
`disarm()` around each stretch of decoding (pipeline.frames.Deadline calls them).
Parent side: `Monitor(folder)`, a thread that kills, and `taken()` which units it killed.
"""

from __future__ import annotations

import math
import os
import signal
import struct
import threading
import time

__all__ = ["attach", "begin", "end", "arm", "disarm", "Monitor", "GRACE_S"]

GRACE_S = 1.0  # past a decode's deadline before its worker is killed: the in-process abort goes first
POLL_S = 0.1
_SLOT = struct.Struct("<ddq")  # over-budget moment (time.monotonic, inf: not decoding), budget (s), ticket

_fd: int | None = None
_ticket = -1


# --- worker side ------------------------------------------------------------------------------
def attach(folder: str) -> None:
    """Make this process watchable: its slot is `folder`/<pid>."""
    global _fd
    if _fd is None:
        _fd = os.open(os.path.join(folder, str(os.getpid())), os.O_CREAT | os.O_RDWR, 0o600)
        _write(math.inf, 0.0)


def _write(at: float, seconds: float) -> None:
    if _fd is not None:
        os.pwrite(_fd, _SLOT.pack(at, seconds, _ticket), 0)


def begin(ticket: int) -> None:
    """This worker now runs unit `ticket` (the executor's index of the job)."""
    global _ticket
    _ticket = ticket
    _write(math.inf, 0.0)


def end() -> None:
    global _ticket
    _ticket = -1
    _write(math.inf, 0.0)


def arm(at: float, seconds: float) -> None:
    """Decoding from now on: over budget at `at` (time.monotonic()); `seconds` is the whole budget."""
    _write(at, seconds)


def disarm() -> None:
    _write(math.inf, 0.0)


# --- parent side ------------------------------------------------------------------------------
def _read(path: str) -> tuple[float, float, int] | None:
    try:
        with open(path, "rb") as f:
            blob = f.read(_SLOT.size)
    except OSError:
        return None
    return _SLOT.unpack(blob) if len(blob) == _SLOT.size else None


def _our_child(pid: int) -> bool:
    """Is `pid` still a live child of this process (not a dead worker's pid, reused)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()  # after "(comm)", which may hold spaces
    return len(fields) > 1 and fields[0] != "Z" and int(fields[1]) == os.getpid()


class Monitor:
    """While open, a thread that SIGKILLs every watched worker still decoding `GRACE_S` after its
    deadline; `taken()` returns {ticket: reason} of the units it killed since the last call."""

    def __init__(self, folder: str):
        self.folder = folder
        self._killed: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seen: dict[str, tuple] = {}
        self._thread = threading.Thread(target=self._loop, name="mesodata-watchdog", daemon=True)

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def taken(self) -> dict[int, str]:
        with self._lock:
            out, self._killed = self._killed, {}
        return out

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                names = os.listdir(self.folder)
            except OSError:
                continue
            for name in names:
                self._look(name)

    def _look(self, name: str) -> None:
        path = os.path.join(self.folder, name)
        slot = _read(path)
        if slot is None or not name.isdigit():
            return
        at, seconds, ticket = slot
        pid = int(name)
        if not _our_child(pid):  # a worker gone (pool shut down, killed): its slot is stale
            os.unlink(path)
            self._seen.pop(name, None)
            return
        late = time.monotonic() - at
        # two polls in a row must agree (a read racing a write sees a torn slot), and a last look
        if late < GRACE_S or self._seen.get(name) != slot:
            self._seen[name] = slot
            return
        if _read(path) != slot:
            return
        os.kill(pid, signal.SIGKILL)
        os.unlink(path)
        self._seen.pop(name, None)
        with self._lock:
            self._killed[ticket] = (f"decoding abandoned after the {seconds:g} s decode timeout: the decoder "
                                    f"hung (no return for {late + seconds:.1f} s) and its worker process was killed")
