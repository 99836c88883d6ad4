"""The staged runner: fingerprints, per-unit atomic parts, resume, parallel units, stage state.

A stage is a pure step from input tables + parameters to output tables. Its fingerprint hashes
its name, code version, parameters and the fingerprints of the stages it reads; a stage whose
recorded fingerprint matches is skipped. Inside a stage the work is split into units (a video,
a shard); each unit writes its own Parquet part atomically, so a killed build resumes by doing
only the units whose part is missing.

A stage module declares itself as a `StageDef` (name, version, parameter check, upstream stages,
its units, a pure unit function, how parts combine into its artifact and report, how the report
reads); `run_stage` does the bookkeeping for every stage alike: freshness, fingerprint, parts,
map, combine, schema check, report, record.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from . import atomic, schema, storage, watchdog
from .errors import UserError

log = logging.getLogger("mesodata")

STATE_DIR = ".state"
LEDGER = "_parts.json"  # in a parts folder: each part's sha256, bytes and rows, as its worker saw it
DAMAGED = ".damaged.json"  # files `mesodata verify` found corrupt: their stage is stale until it redoes them


@dataclass(frozen=True)
class Stage:
    """What identifies a stage's output: name, code version, parameters and upstream stages."""

    name: str
    version: str
    params: dict[str, Any] = field(default_factory=dict)
    upstream: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unit:
    """One independent piece of a stage's work; `key` names its part file."""

    key: str
    payload: Any


def part_name(key: str) -> str:
    """A file-system-safe, collision-free file name for a unit key."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-80:]
    return f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.parquet"


class Work:
    """The work directory: stage states, parts, artifacts and reports.

    `root` is a local folder or an fsspec URL (pipeline.storage): `path()` gives a `Path` or a
    `UPath`, and everything written goes through `atomic`, so both kinds behave the same."""

    def __init__(self, root: str | os.PathLike):
        self.root = storage.location(root, changing=True)
        storage.check_store(self.root, "work dir")
        self._parts: dict[str, Path] = {}  # stage name -> its parts folder in this run

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def remote(self) -> bool:
        return storage.is_remote(self.root)

    def read_table(self, rel: str, columns: list[str] | None = None, *, missing: str) -> pa.Table:
        """An artifact's table; UserError(`missing`) when its stage has not written it."""
        path = self.path(rel)
        if not path.exists():
            raise UserError(missing)
        return storage.read_table(path, columns=columns)

    # --- stage state -------------------------------------------------------------------
    def state(self, name: str) -> dict | None:
        p = self.path(STATE_DIR, f"{name}.json")
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("corrupt state file %s: treating stage %s as missing", p, name)
            return None

    def fingerprint(self, stage: Stage) -> str:
        upstream = {}
        for name in stage.upstream:
            st = self.state(name)
            if st is None:
                raise UserError(f"stage '{name}' has not run in {self.root}; run `mesodata build` first")
            upstream[name] = st["fingerprint"]
        blob = json.dumps(
            {"name": stage.name, "version": stage.version, "params": stage.params, "upstream": upstream},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def is_fresh(self, stage: Stage) -> bool:
        st = self.state(stage.name)
        if st is None:
            return False
        try:
            fp = self.fingerprint(stage)
        except UserError:
            return False
        outputs = st.get("outputs", {})
        damaged = self.damaged()
        if any(damaged.get(o, {}).get("stage") == stage.name for o in outputs):
            return False
        return st["fingerprint"] == fp and all(self.path(o).exists() for o in outputs)

    # --- files `verify` found corrupt --------------------------------------------------------
    def damaged(self) -> dict[str, dict]:
        """{file: {"stage", "problem"}} as the last `mesodata verify` found them."""
        try:
            found = json.loads(self.path(DAMAGED).read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return found if isinstance(found, dict) else {}

    def mark_damaged(self, rows: Iterable[dict]) -> None:
        """Remember what `verify` found corrupt ({"stage", "file", "problem"} rows), so the next run
        of each such stage redoes exactly those files instead of calling itself up to date."""
        found = {r["file"]: {"stage": r["stage"], "problem": r["problem"]} for r in rows}
        if found:
            atomic.write_json(self.path(DAMAGED), found)
        elif self.path(DAMAGED).exists():
            self.path(DAMAGED).unlink()

    def drop_damaged(self, stage_name: str | None = None) -> list[str]:
        """Delete the files of `stage_name` (of every stage when None) that `verify` found corrupt:
        a missing unit part or shard is what a stage redoes. Returns the files deleted."""
        dropped = []
        for rel, entry in self.damaged().items():
            if stage_name is None or entry.get("stage") == stage_name:
                p = self.path(rel)
                if p.exists() and not p.is_dir():
                    p.unlink()
                    dropped.append(rel)
        if dropped:
            log.info("%s: redoing %d file(s) `mesodata verify` found corrupt: %s", stage_name or "verify",
                     len(dropped), ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
        return dropped

    def record(self, stage: Stage, outputs: Sequence[str], counts: dict[str, Any]) -> dict:
        """Mark `stage` done: its fingerprint, and the row count and hash of every output file.

        When the stage's unit parts are themselves its artifact (a parts folder outside `.parts/`,
        such as faces/), every part the run's `map_units` listed in its ledger is recorded too,
        with the hash its worker computed, so `mesodata verify` checks them and a deleted part
        makes the stage stale instead of silently missing."""
        files = self._artifact_parts(stage.name)
        for rel in outputs:
            p = self.path(rel)
            entry = {"sha256": storage.sha256(p), "bytes": storage.size(p)}
            if p.suffix == ".parquet":
                entry["rows"] = storage.parquet_file(p).metadata.num_rows
            files[rel] = entry
        state = {
            "stage": stage.name, "version": stage.version, "params": stage.params,
            "upstream": list(stage.upstream),
            "fingerprint": self.fingerprint(stage), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": files, "counts": counts,
        }
        atomic.write_json(self.path(STATE_DIR, f"{stage.name}.json"), state)
        damaged = self.damaged()
        if any(e.get("stage") == stage.name for e in damaged.values()):  # redone: hashes recorded afresh
            self.mark_damaged([{"file": f, **e} for f, e in damaged.items() if e.get("stage") != stage.name])
        return state

    def _artifact_parts(self, name: str) -> dict[str, dict]:
        d = self._parts.get(name)
        if d is None or self.path(".parts") in d.parents:
            return {}
        try:
            ledger = json.loads((d / LEDGER).read_text())
        except FileNotFoundError:
            return {}
        rel = storage.relative(d, self.root)
        return {f"{rel}/{part}": entry for part, entry in ledger.items() if (d / part).exists()}

    def status(self, stage_names: Iterable[str]) -> list[dict]:
        """done / stale / missing for each stage, judged against its upstream's recorded fingerprints."""
        rows = []
        for name in stage_names:
            st = self.state(name)
            if st is None:
                rows.append({"stage": name, "status": "missing", "finished": "", "counts": {}})
                continue
            stage = Stage(name, st["version"], st["params"], tuple(st.get("upstream", [])))
            ok = self.is_fresh(stage)
            rows.append({"stage": name, "status": "done" if ok else "stale",
                         "finished": st["finished"], "counts": st.get("counts", {})})
        return rows

    # --- parts --------------------------------------------------------------------------
    def parts_dir(self, stage: Stage, fingerprint: str, where: str | None = None) -> Path:
        """The folder of `stage`'s unit parts; emptied when the fingerprint it holds is not `fingerprint`."""
        d = self.path(where or os.path.join(".parts", stage.name))
        marker = d / "_fingerprint"
        if d.exists() and (not marker.exists() or marker.read_text().strip() != fingerprint):
            storage.remove_tree(d)
        if not marker.exists():
            atomic.write_bytes(marker, fingerprint.encode())  # makes the folder (a prefix, on a store)
        elif not self.remote:  # temp files of writers killed mid-write (one build per work dir: none is live)
            for tmp in d.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        self.drop_damaged(stage.name)
        self._parts[stage.name] = d
        return d


class Lock:
    """One build per work dir: an exclusive `flock` on WORK/.lock, which holds the owner's pid.

    The kernel drops the lock when its process dies (even by SIGKILL), so a stale lock file of a
    dead process is simply taken over, and two processes taking over at once cannot both win
    (deciding by a pid check and then unlinking could let both run).

    On an object store the flock is on a local file named after the URL, and WORK/.lock is an object
    created only if absent (a conditional PUT), naming the owner's host. A store cannot tell that
    its owner died, so a lock left by a killed build is taken over only from the same host, where
    the flock proves the owner gone; one left by another host is reported, to be deleted by hand.
    """

    def __init__(self, work: Work):
        self.work = work
        self.store_lock = work.path(".lock") if work.remote else None
        self.path = _local_lock_file(work.root) if work.remote else work.path(".lock")
        self.fd: int | None = None
        self.created: list[Path] = []

    def __enter__(self) -> "Lock":
        if not self.work.remote:
            storage.check_writable(self.work.root, "work dir")
        self.created = storage.missing_folders(self.path.parent)  # removed again if the command fails
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._take()
        except OSError as exc:
            self._remove_created()
            raise UserError(storage.unwritable(self.path.parent, exc, "work dir")) from None
        except BaseException:
            self._remove_created()
            raise
        self._own(fd)
        return self

    def _take(self) -> int:
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner() or {}
                who = (f"process {owner['pid']} on {owner.get('host', '?')}" if owner.get("pid")
                       else "another process")
                raise UserError(f"work dir {self.work.root} is in use by {who}; wait for it to finish "
                                "(one build per work dir)") from None
            try:  # its previous owner may have unlinked the file between our open and flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _own(self, fd: int) -> None:
        old = self._owner()
        if old and old.get("pid"):
            log.warning("taking over stale lock %s (process %s on %s is gone)", self.path, old["pid"],
                        old.get("host", "?"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self.fd = fd
        if self.store_lock is not None:
            try:
                self._claim_store_lock()
            except BaseException:
                self.__exit__(*sys.exc_info())
                raise

    def _claim_store_lock(self) -> None:
        lock, me = self.store_lock, {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            with lock.fs.open(lock.path, "xb") as f:  # fails when the object exists
                f.write(json.dumps(me).encode())
            return
        except FileExistsError:
            pass
        try:
            owner = json.loads(lock.read_text())
        except (OSError, ValueError):
            owner = {}
        if not isinstance(owner, dict) or owner.get("host") != me["host"]:
            who = owner.get("host", "an unknown host") if isinstance(owner, dict) else "an unknown host"
            self.store_lock = None  # not ours: __exit__ must leave it
            raise UserError(f"work dir {self.work.root} is locked by a build on {who} ({lock}); "
                            "if no build runs there any more, delete that object and retry")
        log.warning("taking over stale lock %s (process %s on this host is gone)", lock, owner.get("pid"))
        lock.write_bytes(json.dumps(me).encode())

    def __exit__(self, exc_type=None, *exc) -> None:
        if self.store_lock is not None:
            self.store_lock.unlink(missing_ok=True)
            self.store_lock = None
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: see __enter__
            os.close(self.fd)
            self.fd = None
        if exc_type is not None:
            self._remove_created()

    def _remove_created(self) -> None:
        """A command that failed leaves no work dir it made and left empty (it refused its input,
        say): folders it created, innermost first, as long as nothing is in them."""
        for d in getattr(self, "created", []):
            try:
                _remove_empty_tree(d)
            except OSError:
                break
        self.created = []

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None


def _remove_empty_tree(d: Path) -> None:
    """rmdir `d` if it holds nothing but empty folders (OSError when it holds a file)."""
    if not d.is_dir() or d.is_symlink():
        return
    for sub in d.iterdir():
        if not sub.is_dir() or sub.is_symlink():
            raise OSError(f"{d} is not empty")
        _remove_empty_tree(sub)
    d.rmdir()


def _local_lock_file(root) -> Path:
    """The local file whose flock stands for a store's work dir among this host's processes."""
    folder = Path(tempfile.gettempdir(), "mesodata-locks")
    folder.mkdir(exist_ok=True)
    return folder / f"{hashlib.sha1(storage.identity(root).encode()).hexdigest()[:16]}.lock"


# --- executing units ------------------------------------------------------------------------
def _run_unit(fn: Callable[[Any], pa.Table], unit: Unit, part, artifact: str | None) -> dict:
    """Executed in a worker: compute one unit's table and write it atomically; return a small summary.
    `part` is a Path or UPath: a worker writes straight to the work dir, wherever it is."""
    if part.exists():
        try:
            return {"key": unit.key, "skipped": True, "rows": None, "file": _file_entry(part)}
        except (pa.ArrowException, OSError) as exc:  # not written by us (atomic writes): redo it
            log.warning("unreadable part %s (%s): computing it again", part, exc)
            part.unlink()
    table = fn(unit.payload)
    if artifact:
        table = schema.conform(table, artifact)
    atomic.write_parquet(part, table)
    summary = {"key": unit.key, "skipped": False, "rows": table.num_rows, "file": _file_entry(part)}
    if "status" in table.column_names:
        summary["status"] = {k: int(v) for k, v in
                             zip(*_value_counts(table.column("status")))}
    return summary


def _file_entry(part) -> dict:
    """What `Work.record` keeps of an output file; computed where the part was written."""
    return {"sha256": storage.sha256(part), "bytes": storage.size(part),
            "rows": storage.parquet_file(part).metadata.num_rows}


def _value_counts(col: pa.ChunkedArray):
    vc = col.value_counts()
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def progress(iterable, total: int, desc: str):
    """A progress bar (units/s, ETA) on a terminal; a log line per tenth of the units otherwise."""
    from .progress import track

    return track(iterable, total, desc, "units", log_steps=10)


def map_units(fn: Callable[[Any], pa.Table], units: Sequence[Unit], parts_dir: Path, *,
              artifact: str | None, workers: int, desc: str, executor: "Executor | None" = None,
              abandoned: Callable[[Any, str], pa.Table] | None = None) -> list[dict]:
    """Run `fn` on every unit whose part is not yet on disk; return one summary per unit.

    With `abandoned`, units run in watched worker processes: a worker whose decoder hangs past its
    deadline is killed (pipeline.watchdog) and its unit's part is `abandoned(payload, reason)`."""
    own = executor is None
    executor = executor or LocalExecutor(workers)
    jobs = [(fn, u, parts_dir / part_name(u.key), artifact) for u in units]

    def give_up(ticket: int, reason: str) -> dict:
        _, unit, part, art = jobs[ticket]
        log.warning("%s: %s", unit.key, reason)
        return _run_unit(lambda payload: abandoned(payload, reason), unit, part, art)

    try:
        results = list(progress(executor.map(_run_unit, jobs, give_up=give_up if abandoned else None),
                                len(jobs), desc))
    except BaseException:
        if isinstance(parts_dir, Path):  # the stopped workers' half-written parts (a full disk, Ctrl-C)
            for tmp in parts_dir.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        raise
    finally:
        if own:
            executor.close()
    atomic.write_json(parts_dir / LEDGER, {part_name(r["key"]): r.pop("file") for r in results})
    return results


# --- worker processes: they stop with the command that started them ---------------------------
PARENT_CHECK_S = 0.5  # how often a worker looks whether its parent is still there
_watching: int | None = None


def worker_init(owner: int, watch: str | None = None) -> None:
    """Run first in every loky worker process this command starts (the local cluster's Dask
    workers get the same from Dask: started with SIGINT ignored, see DaskExecutor, and a pipe
    from their parent that closes when it dies).

    Ctrl-C is the parent's to handle: it stops the workers itself, so a worker ignores SIGINT
    (no traceback per worker, no half-handled interrupt). And a worker must not outlive its parent:
    killed with SIGKILL, the parent cannot stop anything, so each worker watches that its parent is
    still `owner` and exits at once when it is gone (re-parented: SIGKILL, OOM killer, a crash).
    With `watch` (a folder), the worker publishes its decode deadlines there for the parent's
    watchdog, which kills it when its decoder hangs.
    """
    global _watching
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if watch:
        watchdog.attach(watch)
    if _watching == owner:
        return
    _watching = owner
    if os.getppid() != owner:  # already orphaned before it started
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(owner,), name="mesodata-parent-watch", daemon=True).start()


def _watch_parent(owner: int) -> None:
    while os.getppid() == owner:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)  # no cleanup to do: parts are written atomically, a temp file is swept by the next run


class LocalExecutor:
    """Units in loky worker processes; serial in-process when workers == 1 (unless the units must
    be watched: a hung decoder can only be killed in a process of its own).

    A worker the watchdog killed takes the pool down with it (loky stops every worker): its unit
    gets its `give_up` part, the units lost with the pool run again in a new one, and the map goes
    on. A worker that dies otherwise (a crash, the OOM killer) still stops the map."""

    IDLE_S = 300  # idle workers stay this long, for the next stage

    def __init__(self, workers: int):
        self.workers = workers
        self._watch: str | None = None

    def map(self, fn, jobs, give_up=None):
        if give_up is None and (self.workers <= 1 or len(jobs) <= 1):
            return (fn(*j) for j in jobs)
        if not jobs:
            return iter(())
        return self._pool_map(fn, jobs, give_up)

    def _pool_map(self, fn, jobs, give_up):
        from concurrent.futures import FIRST_COMPLETED, wait

        from joblib.executor import get_memmapping_executor
        from joblib.externals.loky.process_executor import BrokenProcessPool

        if self._watch is None:
            self._watch = tempfile.mkdtemp(prefix="mesodata-watch-")
        n = max(1, min(self.workers, len(jobs)))
        todo = collections.deque(range(len(jobs)))
        running: dict = {}  # future -> ticket (the job's index)
        with watchdog.Monitor(self._watch) as monitor:
            try:
                while todo or running:
                    # joblib's own handle on loky's reusable pool: a later joblib.Parallel in this
                    # process (scikit-learn's n_jobs, say) reuses or replaces it; loky's bare
                    # get_reusable_executor leaves a pool joblib then fails on
                    pool = get_memmapping_executor(n, timeout=self.IDLE_S, initializer=worker_init,
                                                   initargs=(os.getpid(), self._watch))
                    while todo and len(running) < 2 * n:  # a few queued, not every payload at once
                        t = todo.popleft()
                        running[pool.submit(_watched_unit, t, fn, *jobs[t])] = t
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    lost, broken = [], None
                    for fut in done:
                        t = running.pop(fut)
                        try:
                            yield fut.result()
                        except BrokenProcessPool as exc:
                            lost.append(t)
                            broken = exc
                    if broken is not None:
                        yield from self._recover(broken, lost, running, todo, monitor, give_up)
            except BaseException:
                _kill_loky_workers()
                raise

    @staticmethod
    def _recover(broken, lost, running, todo, monitor, give_up):
        """The pool broke: the units the watchdog killed get their `give_up` part; the others in
        flight with it run again. A break the watchdog did not cause is raised."""
        for fut, t in list(running.items()):  # finished before the break, or lost with the pool
            if fut.done() and fut.exception() is None:
                yield fut.result()
            else:
                lost.append(t)
        running.clear()
        time.sleep(watchdog.POLL_S)  # the kill is recorded just after it lands
        killed = monitor.taken()
        if give_up is None or not killed.keys() & set(lost):
            raise broken
        for t in sorted(lost, reverse=True):
            if t in killed:
                yield give_up(t, killed[t])
            else:
                todo.appendleft(t)

    def close(self) -> None:
        if self._watch is not None:
            import shutil

            shutil.rmtree(self._watch, ignore_errors=True)
            self._watch = None


def _watched_unit(ticket: int, fn, *args):
    """In a worker: run one job with the watchdog told which it is."""
    watchdog.begin(ticket)
    try:
        return fn(*args)
    finally:
        watchdog.end()


def _kill_loky_workers() -> None:
    try:
        from joblib.externals.loky import reusable_executor
    except ImportError:  # pragma: no cover - joblib without loky
        return
    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        _ignore_manager_thread_errors()
        # wait: the killed workers are gone (and can write nothing more) when this returns
        executor.shutdown(wait=True, kill_workers=True)


def _ignore_manager_thread_errors() -> None:
    """loky's manager thread can trip over the work items a forced shutdown just removed (a
    KeyError traceback on stderr after Ctrl-C); the command is stopping anyway, so say nothing."""
    previous = threading.excepthook

    def hook(args):
        if args.thread is None or args.thread.name != "ExecutorManagerThread":
            previous(args)

    threading.excepthook = hook


class DaskExecutor:
    """Units as Dask tasks on an existing cluster (`scheduler` address) or a local one started here.

    Each task writes its own part into the work dir, which every worker must see; only the small
    summary dict travels back to the client.
    """

    def __init__(self, workers: int, scheduler: str | None = None):
        from dask.distributed import Client, LocalCluster

        logging.getLogger("distributed").setLevel(logging.WARNING)
        if scheduler:
            self.client = Client(scheduler)
            self.cluster = None
        else:
            # Ctrl-C is this process's to handle (it closes the cluster): worker processes started
            # while SIGINT is ignored keep ignoring it (Python and asyncio leave an ignored SIGINT be)
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
            try:
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
                self.client = Client(self.cluster)
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)
            self.client.run(_quiet_dask_worker)

    def map(self, fn, jobs, give_up=None):
        """(`give_up` is not used: tasks run in the workers' threads, where only the in-process
        decode deadline applies; a decoder hung in C code holds its worker thread.)"""
        from dask.distributed import as_completed

        # A bounded window of tasks in flight, each released once its summary is read: the scheduler
        # holds ~17 KB per task it knows, so submitting all of DFDC's 119k units at once would grow
        # the client to ~2 GB; this keeps it flat. pure=False: a unit whose part was deleted must run
        # again, not come from Dask's cache.
        jobs = iter(jobs)
        window = max(256, 4 * sum(self.client.nthreads().values()))
        running = as_completed([self.client.submit(fn, *j, pure=False) for j in itertools.islice(jobs, window)])
        for fut in running:
            result = fut.result()
            fut.release()
            for j in itertools.islice(jobs, 1):
                running.add(self.client.submit(fn, *j, pure=False))
            yield result

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _quiet_dask_worker() -> None:
    """In a worker of our local cluster: tasks cancelled when the cluster closes (Ctrl-C) are
    expected, not a warning per task."""
    logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


Executor = LocalExecutor | DaskExecutor


def make_executor(backend: str, workers: int, scheduler: str | None = None):
    if backend == "local":
        if scheduler:
            raise UserError("--scheduler needs --backend dask")
        return LocalExecutor(workers)
    if backend == "dask":
        return DaskExecutor(workers, scheduler)
    raise UserError(f"--backend must be local or dask, got {backend!r}")


def read_parts(parts_dir: Path, keys: Sequence[str]) -> pa.Table:
    """Concatenate the parts of `keys`, in that order (so the result does not depend on worker order)."""
    tables = [storage.read_table(parts_dir / part_name(k)) for k in keys]
    return pa.concat_tables(tables) if tables else None


def summarize(results: list[dict]) -> dict:
    done = sum(not r["skipped"] for r in results)
    return {"units": len(results), "computed": done, "resumed": len(results) - done}


# --- the stage contract ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A declared parameter: its default and the constraint its value must meet (`check_params`).

    `kind` int, float, bool or str (None: any value, checked by the stage); `low`/`high` bound a
    number (`open_low`: the bound itself is out); `choices` lists the allowed values. None stands
    for the default; a None default means the parameter may be absent."""

    default: Any
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        name = {int: "an int", float: "a float", bool: "a bool", str: "a str"}[self.kind]
        if self.low is None and self.high is None:
            return name
        lo = "-inf" if self.low is None else self.low
        hi = "inf)" if self.high is None else f"{self.high}]"
        return f"{name} in the range {'(' if self.open_low else '['}{lo}, {hi}"

    def value(self, v: Any) -> Any:
        """`v` as the declared kind (an int for a float is a float), or ValueError."""
        if self.choices is not None:
            if v not in self.choices:
                raise ValueError
            return v
        if self.kind is None:
            return v
        if self.kind is bool or self.kind is str:
            if not isinstance(v, self.kind):
                raise ValueError
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError
        if self.kind is int:
            if not isinstance(v, (int, np.integer)):
                raise ValueError
            v = int(v)
        else:
            v = float(v)
            if not np.isfinite(v):
                raise ValueError
        if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
            raise ValueError
        if self.high is not None and v > self.high:
            raise ValueError
        return v


def check_params(stage: str, declared: dict[str, Param], raw: dict) -> dict:
    """Every declared parameter (defaults filled in, values of their kind), checked in one place;
    UserError in scikit-learn's words naming the first bad one, or the unknown ones."""
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        raise UserError(f"unknown {stage} parameter(s) {unknown}; known: {', '.join(declared) or 'none'}")
    out = {}
    for name, d in declared.items():
        v = raw.get(name)
        if v is None:
            v = d.default
        if v is not None:
            try:
                v = d.value(v)
            except ValueError:
                raise UserError(f"The {name!r} parameter of {stage} must be {d.describe()}. "
                                f"Got {v!r} instead.") from None
        out[name] = v
    return out


@dataclass(frozen=True)
class Parts:
    """A stage's unit parts in this run, as its hooks see them: the folder, the planned unit keys
    (in plan order) and, after the map, one summary per unit."""

    dir: Path
    keys: tuple[str, ...]
    results: tuple[dict, ...] = ()

    def path(self, key: str) -> Path:
        return self.dir / part_name(key)

    def read(self, key: str, columns: list[str] | None = None) -> pa.Table:
        return storage.read_table(self.path(key), columns=columns)

    def table(self) -> pa.Table | None:
        """Every planned part, concatenated in plan order; None when there are no units."""
        return read_parts(self.dir, self.keys)

    def drop(self, key: str) -> None:
        """Forget a unit's part, so the map computes it again."""
        self.path(key).unlink(missing_ok=True)

    @property
    def summary(self) -> dict:
        """units / computed / resumed, for the stage's counts."""
        return summarize(list(self.results))


@dataclass
class StageRun:
    """One run of a stage, handed to its hooks: the work dir, the checked parameters, the stage's
    identity and fingerprint, a context the stage fills (`identify` returns it, `plan` may add to
    it) and its parts once mapped."""

    work: Work
    params: dict
    stage: Stage
    context: dict
    fingerprint: str | None = None
    parts: Parts | None = None


@dataclass
class Output:
    """What a stage's combine step hands back: its report (written to reports/<name>.json and
    printed by the stage's `print_report`), the artifact's table (checked against
    schemas/<name>.yaml and written to `StageDef.artifact`), any other files it wrote (recorded
    with their hashes) and the counts `mesodata status` shows."""

    report: dict
    counts: dict
    table: pa.Table | None = None
    files: list[str] = field(default_factory=list)


def _default_identify(work: Work, params: dict) -> tuple[dict, dict]:
    return params, {}


@dataclass(frozen=True)
class StageDef:
    """A stage, declared. `run_stage` does the rest.

    - `check(raw) -> params`: the parameters with defaults filled in, validated once (UserError
      naming the bad one);
    - `identify(work, params) -> (fingerprinted parameters, context)`: what the fingerprint hashes
      besides name, version and upstream (default: the parameters), and what the stage learnt
      finding it (a listing, a preset) for the later steps;
    - `plan(run) -> [Unit]`, `unit(payload) -> Table` (pure, run in workers; each part checked
      against schemas/<unit_schema>.yaml when given), `combine(run) -> Output`;
    - `print_report(report)`: the report as a person reads it;
    - where parts live: `.parts/<name>` unless `parts_at` names a folder in which the parts are
      the artifact (recorded with their hashes; parts of units no longer planned are removed);
      `owns`, a folder holding one fingerprint's outputs, emptied when the fingerprint changes;
      `parts_key(run)`: what the parts depend on, when not the whole fingerprint;
    - optional: `fresh(run)` (outputs outside the work dir still whole), `adopt(run)` (an Output
      made from an older layout without computing, or None), `before_map(run)` (parts whose
      outputs elsewhere are gone: drop them), `abandoned(payload, reason) -> Table` (the part of a
      unit whose worker the executor killed, its decoder hung past its deadline: declaring it runs
      the units in watched worker processes), `up_to_date(state, params)` (the skip line).
    """

    name: str
    version: str
    check: Callable[[dict], dict]
    combine: Callable[[StageRun], Output]
    print_report: Callable[[dict], None]
    upstream: tuple[str, ...] = ()
    identify: Callable[[Work, dict], tuple[dict, dict]] = _default_identify
    plan: Callable[[StageRun], list[Unit]] | None = None
    unit: Callable[[Any], pa.Table] | None = None
    unit_schema: str | None = None
    artifact: str | None = None
    parts_at: str | None = None
    owns: str | None = None
    parts_key: Callable[[StageRun], str] | None = None
    fresh: Callable[[StageRun], bool] | None = None
    adopt: Callable[[StageRun], "Output | None"] | None = None
    before_map: Callable[[StageRun], None] | None = None
    abandoned: Callable[[Any, str], pa.Table] | None = None
    up_to_date: Callable[[dict, dict], str] | None = None
    title: str | None = None  # its name in progress and log lines (default: name)

    @property
    def report(self) -> str:
        return f"reports/{self.name}.json"


def run_stage(work: Work, sd: StageDef, params: dict | None = None, *, workers: int = 1,
              executor: "Executor | None" = None) -> dict:
    """Run stage `sd` in `work` unless it is up to date; return its recorded state.

    Check the parameters, fingerprint the stage, skip it when fresh, else plan its units, compute
    the missing parts (in `workers` processes or on `executor`), combine them, check and write the
    artifact and report, print the report and record the stage."""
    title = sd.title or sd.name
    p = sd.check(dict(params or {}))
    fp_params, context = sd.identify(work, p)
    stage = Stage(sd.name, sd.version, fp_params, sd.upstream)
    run = StageRun(work, p, stage, context)
    if work.is_fresh(stage):
        run.fingerprint = work.fingerprint(stage)
        if sd.fresh is None or sd.fresh(run):
            st = work.state(sd.name)
            log.info("%s: %s", title, sd.up_to_date(st, p) if sd.up_to_date else "up to date, nothing to do")
            return st
    run.fingerprint = work.fingerprint(stage)  # UserError naming an upstream stage that has not run
    out = sd.adopt(run) if sd.adopt else None
    if out is None:
        units = sd.plan(run) if sd.plan else []
        if sd.unit is not None:
            if sd.owns:
                work.parts_dir(stage, run.fingerprint, where=sd.owns)
            folder = work.parts_dir(stage, sd.parts_key(run) if sd.parts_key else run.fingerprint,
                                    where=sd.parts_at)
            run.parts = Parts(folder, tuple(u.key for u in units))
            if sd.before_map:
                sd.before_map(run)
            results = map_units(sd.unit, units, folder, artifact=sd.unit_schema, workers=workers,
                                desc=title, executor=executor, abandoned=sd.abandoned)
            run.parts = Parts(folder, run.parts.keys, tuple(results))
            if sd.parts_at:  # the parts are the artifact: those of units no longer planned go
                wanted = {part_name(k) for k in run.parts.keys}
                for f in folder.glob("*.parquet"):
                    if f.name not in wanted:
                        f.unlink()
        out = sd.combine(run)
    written = []
    if out.table is not None:
        atomic.write_parquet(work.path(sd.artifact), schema.conform(out.table, sd.name))
        written.append(sd.artifact)
    atomic.write_json(work.path(sd.report), out.report)
    sd.print_report(out.report)
    return work.record(stage, [*written, *out.files, sd.report], out.counts)
