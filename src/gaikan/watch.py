"""Watch-folder inspection: a camera drops files into a folder, the station judges them.

:class:`Watcher` (used by ``gaikan watch``) takes each file once it is
complete, inspects it with an :class:`~gaikan.inspection.Inspector`, records
the result in a :class:`~gaikan.records.RecordStore` and moves the file to
``ok/``, ``ng/`` or ``error/`` under the watched folder.  No maths here.

A file is complete when
    its size and modification time have not changed for ``settle_s``
    seconds, it is not empty, and (on Linux, where ``/proc`` shows it) no
    process has it open for writing.  The bytes read are checked against
    the settled size, so a file that grows while it is read is left for the
    next round: a half-written file is never inspected.

Exactly once, across crashes
    The record is committed *with* the file's destination (the journal)
    before the file is moved; the move is one ``os.replace`` on the same
    file system, and the record is then marked moved.  After a crash:

    - killed before the commit: the file is still there, unrecorded; it is
      inspected as new;
    - killed between commit and move: the file is still there and its
      record (same path, same SHA-256, not moved) is found; the file is
      just moved, not inspected again;
    - killed between move and mark: :meth:`Watcher.resume` finds the file at
      its destination and marks the record.

A bad file never stops the watcher: it is recorded with verdict ``error``
and the reason, and moved to ``error/``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .i18n import t

__all__ = ["FOLDERS", "TEMP_SUFFIXES", "Settler", "Watcher", "open_for_writing"]

log = logging.getLogger("gaikan.watch")

#: Where files go, by verdict.
FOLDERS = {"ok": "ok", "defect": "ng", "error": "error"}
#: Names cameras and copy tools give files while writing them: never taken.
TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".filepart", "~")


def open_for_writing(paths: set[str]) -> set[str]:
    """Which of ``paths`` (absolute, resolved) some process has open for writing.

    Reads ``/proc/*/fd`` and ``fdinfo``: Linux only, and only processes this
    user may inspect; elsewhere nothing is reported (the size test remains).
    """
    found: set[str] = set()
    if not paths or not os.path.isdir("/proc/self/fdinfo"):
        return found
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target in paths and _writable(pid, fd):
                found.add(target)
    return found


def _writable(pid: str, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except (OSError, ValueError, IndexError):
        return False
    return False


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


class Settler:
    """Tells when files have stopped changing.

    Parameters
    ----------
    settle_s : float
        How long a file's size and modification time must stay the same.
    clock : callable
        Monotonic time source (tests pass their own).
    """

    def __init__(self, settle_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.clock = clock
        self._seen: dict[Path, _Seen] = {}

    def observe(self, files: list[Path]) -> list[Path]:
        """Look at ``files`` now; return those settled (unchanged for ``settle_s``)."""
        now = self.clock()
        settled = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                self._seen.pop(f, None)
                continue
            old = self._seen.get(f)
            if old is None or (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._seen[f] = _Seen(st.st_size, st.st_mtime_ns, now)
            elif st.st_size > 0 and now - old.since >= self.settle_s:
                settled.append(f)
        for gone in set(self._seen) - set(files):
            del self._seen[gone]
        return settled

    def size(self, f: Path) -> int | None:
        """The settled size of ``f`` (None when not tracked)."""
        seen = self._seen.get(f)
        return None if seen is None else seen.size

    def forget(self, f: Path) -> None:
        """Start over with ``f`` (it changed, or it was handled)."""
        self._seen.pop(f, None)


class Watcher:
    """Inspect, record and sort the files a camera writes into ``in_dir``.

    Parameters
    ----------
    in_dir : path-like
        The watched folder; ``ok/``, ``ng/`` and ``error/`` are made in it.
        Only files directly in it are taken (not hidden ones, nor
        :data:`TEMP_SUFFIXES`).
    inspector : Inspector
    store : RecordStore
    model_id, model_version : optional
        Recorded with every inspection (see ``RecordStore.use_model``).
    station : str, optional
        Recorded as the station; the client is ``watch``.
    settle_s : float
        See :class:`Settler`.
    poll_s : float
        Pause between looks at the folder.
    max_pixels : int, optional
        Largest image decoded (default: :data:`gaikan.io.DEFAULT_MAX_PIXELS`).
    on_record : callable, optional
        Called with each new record's id once its file is moved (MQTT).
    batch_size : int
        Most files inspected, recorded and moved together (one model call,
        one commit, one folder sync per batch).

    Attributes
    ----------
    counts : dict
        Files handled this run, by verdict, plus ``resumed`` (moved after a
        crash without inspecting them again).
    """

    def __init__(
        self,
        in_dir: str | os.PathLike,
        inspector: Any,
        store: Any,
        *,
        model_id: str | None = None,
        model_version: int | None = None,
        station: str | None = None,
        settle_s: float = 1.0,
        poll_s: float = 0.2,
        max_pixels: int | None = None,
        on_record: Callable[[int], None] | None = None,
        batch_size: int = 16,
    ) -> None:
        from .errors import ParameterError
        from .io import DEFAULT_MAX_PIXELS

        self.in_dir = Path(in_dir).resolve()
        if not self.in_dir.is_dir():
            raise ParameterError(f"{in_dir}: not a folder; give the folder the camera writes to")
        self.inspector, self.store = inspector, store
        self.model_id, self.model_version, self.station = model_id, model_version, station
        self.poll_s, self.max_pixels = poll_s, max_pixels or DEFAULT_MAX_PIXELS
        self.on_record, self.batch_size = on_record, max(1, batch_size)
        self.settler = Settler(settle_s)
        self.counts: dict[str, int] = {"ok": 0, "defect": 0, "error": 0, "resumed": 0}
        for sub in FOLDERS.values():
            (self.in_dir / sub).mkdir(exist_ok=True)

    # -- the loop ------------------------------------------------------------
    def candidates(self) -> list[Path]:
        """Files waiting in the folder, oldest first."""
        out = []
        with os.scandir(self.in_dir) as it:
            for e in it:
                if e.name.startswith(".") or e.name.lower().endswith(TEMP_SUFFIXES):
                    continue
                try:
                    if e.is_file(follow_symlinks=False):
                        out.append((e.stat().st_mtime_ns, e.name))
                except OSError:
                    continue
        return [self.in_dir / name for _, name in sorted(out)]

    def resume(self) -> int:
        """Mark records whose file reached its destination before a crash; return how many."""
        n = 0
        for rec in self.store.unmoved(str(self.in_dir) + os.sep):
            if not Path(rec.source).exists() and rec.dest and Path(rec.dest).exists():
                self.store.mark_moved(rec.id)
                n += 1
            elif not Path(rec.source).exists():
                log.warning("record %s: %s is gone and not in %s", rec.id, rec.source, rec.dest)
        return n

    def poll(self) -> int:
        """One look at the folder: handle every complete file; return how many."""
        settled = self.settler.observe(self.candidates())
        busy = open_for_writing({str(f) for f in settled})
        ready = []
        for f in settled:
            if str(f) in busy:
                self.settler.forget(f)
            else:
                ready.append(f)
        done = 0
        for i in range(0, len(ready), self.batch_size):
            done += self.process(ready[i : i + self.batch_size])
        return done

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        once: bool = False,
        idle_timeout_s: float | None = None,
    ) -> dict[str, int]:
        """Watch until ``stop`` is set (or, with ``once``, until the folder is empty).

        With ``once``, files that never settle are left after
        ``idle_timeout_s`` (default: 30 s or 10 settle intervals) without
        progress.  When the database fails (a shared server restarting), the
        watcher waits and tries again, 1 s to 30 s apart; nothing is moved
        meanwhile.  With ``once`` it raises
        :class:`~gaikan.records.RecordsError` instead.
        """
        from sqlalchemy.exc import DBAPIError

        stop = stop or threading.Event()
        self.resume()
        idle_limit = idle_timeout_s or max(30.0, 10 * self.settler.settle_s)
        last_progress = time.monotonic()
        backoff = 1.0
        while not stop.is_set():
            try:
                if self.poll():
                    last_progress = time.monotonic()
                backoff = 1.0
            except DBAPIError as exc:
                if once:
                    raise _user_error(exc, self.store) from None
                log.warning("the database failed (%s); trying again in %.0f s", exc, backoff)
                stop.wait(backoff)
                backoff = min(2 * backoff, 30.0)
                continue
            if once:
                left = self.candidates()
                if not left:
                    break
                if time.monotonic() - last_progress > idle_limit:
                    log.warning("left %d file(s) that did not settle: %s", len(left), left[:5])
                    break
            stop.wait(self.poll_s)
        return dict(self.counts)

    # -- a batch of files --------------------------------------------------------
    def process(self, paths: list[Path]) -> int:
        """Inspect, record and move settled files; return how many were handled.

        Files that changed or cannot be read yet are left for a later round.
        The batch's records are committed in one transaction before any
        file is moved; the moves are then synced and marked in one more.
        """
        from .records.blobs import sha256

        fresh: list[tuple[Path, bytes, str]] = []
        moves: list[tuple[int, Path, Path]] = []
        for path in paths:
            data = self._read(path)
            if data is None:
                continue
            digest = sha256(data)
            rec = self.store.pending_move(str(path), digest)
            if rec is not None:  # recorded before a crash, not moved: just move it
                moves.append((rec.id, path, Path(rec.dest)))
                self.counts["resumed"] += 1
            else:
                fresh.append((path, data, digest))
        judged = self._inspect([(p, d) for p, d, _ in fresh])
        entries = []
        for (path, data, digest), (ins, overlay, latency) in zip(fresh, judged):
            dest = self._dest(path, ins.verdict, digest)
            entries.append((ins, self._add_kwargs(path, data, overlay, latency, dest)))
        ids = self.store.add_many(entries)
        moves += [(rid, kw["source"], kw["dest"]) for rid, (_, kw) in zip(ids, entries)]
        self._move(moves)
        for rid, (ins, kw) in zip(ids, entries):
            self.counts[ins.verdict] += 1
            # the line an operator watches: the verdict word in their language
            verdict = t(f"verdict.{ins.verdict}")
            log.info(
                t(
                    "watch.file",
                    verdict=verdict,
                    file=kw["source"].name,
                    folder=kw["dest"].parent.name,
                )
            )
            if self.on_record is not None:
                self.on_record(rid)
        return len(moves)

    def _read(self, path: Path) -> bytes | None:
        """The file's bytes if it is still exactly as settled, else None (try later)."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
                size = os.fstat(fh.fileno()).st_size
        except OSError as exc:  # gone, or unreadable for now (permissions, a lock)
            if not isinstance(exc, FileNotFoundError):
                log.warning("%s: cannot read it yet (%s)", path, exc)
            self.settler.forget(path)
            return None
        if len(data) != self.settler.size(path) or size != len(data):
            self.settler.forget(path)  # it changed while being read: not complete
            return None
        return data

    def _add_kwargs(
        self, path: Path, data: bytes, overlay: bytes | None, latency: float, dest: Path
    ) -> dict[str, Any]:
        return dict(
            source=path,
            station=self.station,
            client="watch",
            image_bytes=data,
            overlay_png=overlay,
            model_id=self.model_id,
            model_version=self.model_version,
            latency_ms=latency,
            dest=dest,
        )

    def _inspect(self, files: list[tuple[Path, bytes]]) -> list[tuple[Any, bytes | None, float]]:
        """One verdict (and overlay when kept) per file; one model call for the batch.

        ``latency`` is the time from the start of decoding to the batch's verdicts.
        """
        from .errors import GaikanError
        from .inspection import Inspection
        from .io import decode_upload

        t0 = time.perf_counter()
        out: list[Any] = [None] * len(files)
        images, where, originals = [], [], []
        resize = getattr(self.inspector, "resize", "stretch")
        for i, (path, data) in enumerate(files):
            try:
                shape = self.inspector.image_shape
                img, original = decode_upload(
                    data, path.name, shape, max_pixels=self.max_pixels, resize=resize
                )
                images.append(img)
                originals.append(original)
                where.append(i)
            except GaikanError as exc:
                out[i] = (Inspection.failed(path.name, str(exc)), None)
        if images:
            names = [files[i][0].name for i in where]
            # padded frames: the peak is mapped back to the original (out of the pad)
            shapes = originals if resize == "pad" else None
            for i, res in zip(where, self._judge(images, names, shapes)):
                out[i] = res
        ms = (time.perf_counter() - t0) * 1000.0
        return [(ins, overlay, ms) for ins, overlay in out]

    def _judge(
        self, images: list[Any], names: list[str], shapes: list[Any] | None = None
    ) -> list[tuple[Any, bytes | None]]:
        import numpy as np

        from .inspection import Inspection, overlay_png

        try:
            results = self.inspector.judge(np.stack(images), names, shapes=shapes)
        except Exception as exc:  # one file must never stop the line: logged and recorded
            if len(images) > 1:  # find the culprit: judge one at a time
                shp = shapes or [None] * len(images)
                return [
                    r
                    for img, n, s in zip(images, names, shp)
                    for r in self._judge([img], [n], None if s is None else [s])
                ]
            log.exception("%s: inspection failed", names[0])
            return [(Inspection.failed(names[0], f"{names[0]}: inspection failed ({exc!r})"), None)]
        out = []
        for img, ins in zip(images, results):
            overlay = None
            if ins.display is not None and self.store.retention.keeps(ins.verdict):
                overlay = overlay_png(img, ins.display, self.inspector.threshold)
            out.append((ins, overlay))
        return out

    def _dest(self, path: Path, verdict: str, digest: str) -> Path:
        folder = self.in_dir / FOLDERS[verdict]
        dest = folder / path.name
        if dest.exists():  # a camera that reuses names: keep both
            dest = folder / f"{path.stem}.{digest[:12]}{path.suffix}"
            n = 1
            while dest.exists():
                dest = folder / f"{path.stem}.{digest[:12]}.{n}{path.suffix}"
                n += 1
        return dest

    def _move(self, moves: list[tuple[int, Path, Path]]) -> None:
        """Move the files, sync the folders, then mark the records moved."""
        for _, src, dest in moves:
            os.replace(src, dest)
            self.settler.forget(src)
        for folder in {dest.parent for _, _, dest in moves} | {self.in_dir}:
            _fsync_dir(folder)
        self.store.mark_moved([rid for rid, _, _ in moves])


def _user_error(exc: BaseException, store: Any) -> BaseException:
    """A database failure as a :class:`~gaikan.records.RecordsError` naming the database."""
    from .records import RecordsError

    cause = getattr(exc, "orig", None) or exc
    return RecordsError(
        f"the database {store.safe_url} failed: {cause}; check that it is reachable"
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
