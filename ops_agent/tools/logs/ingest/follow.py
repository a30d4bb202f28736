"""Follow log files as `tail -F` does, by polling `stat`: appends, rotation (rename-and-create or copytruncate),
truncation, and files that appear or vanish under glob patterns.

A file is known by its (device, inode), not its name. Its handle stays open, so after a rename or delete the
lines written before the next poll can still be read through it, and the inode cannot be reused meanwhile.
A file renamed out of the patterns is read for `rotate_wait_s` more, as Fluent Bit's tail does: the writer
keeps appending to it until it reopens its log (logrotate's postrotate, the kubelet's ReopenContainerLog).
Offsets count bytes up to the end of the last line delivered, so a follower resumed from them re-reads a
partial line rather than losing it."""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileFollower", "FileOffset", "OffsetFile"]

log = logging.getLogger(__name__)

_HEAD_BYTES = 64  # compared on every poll to notice a truncation that regrew past our offset
_READ_CHUNK = 1 << 20
# Per file and poll: a large backlog (a big file found with start_at_end=False) arrives over several polls,
# back to back, rather than as one huge batch.
_MAX_READ_PER_POLL = 16 << 20

Line = tuple[str, str]


@dataclass
class FileOffset:
    """How far one file has been read: the byte after the last line delivered."""

    path: str
    inode: int
    offset: int


class OffsetFile:
    """Where followed files stood, kept in a JSON file so a restart resumes instead of reading them again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: dict[str, FileOffset] = {}

    def load(self) -> dict[str, FileOffset]:
        try:
            data = json.loads(self.path.read_text())
            self.offsets = {entry["path"]: FileOffset(**entry) for entry in data["files"]}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable file offsets in %s (%s): followed files are read again", self.path, exc)
        return dict(self.offsets)

    def save(self, offsets: Mapping[str, FileOffset]) -> None:
        """Merge and write atomically (a crash leaves the old file or the new one, never half of one)."""
        self.offsets.update(offsets)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"files": [asdict(o) for o in self.offsets.values()]}))
        os.replace(temporary, self.path)


@dataclass
class _Followed:
    path: str
    handle: BinaryIO
    identity: tuple[int, int]  # (st_dev, st_ino)
    offset: int  # file position of the first byte not yet delivered
    pending: bytes = b""  # a partial line read past `offset`, held until its newline arrives
    head: bytes = b""  # the file's first bytes as read: if they change, it was truncated and rewritten

    @property
    def position(self) -> int:
        return self.offset + len(self.pending)


class FileFollower:
    """Follow every file matching `patterns` (globs, `**` recursive, `~` expanded).

    New files are read from their start, except those present at the first poll when `start_at_end` is set.
    `offsets` (from a previous follower's `offsets`) resume files where they were left, matched by inode.
    A file renamed out of the patterns is still read for `rotate_wait_s`, then its partial line is flushed;
    a deleted one is read to its end and dropped at once. Files stay open between polls: call close() when done."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        start_at_end: bool = False,
        offsets: Mapping[str, FileOffset] | None = None,
        poll_interval_s: float = 0.5,
        max_line_bytes: int = 1 << 20,
        rotate_wait_s: float = 5.0,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.patterns = [os.path.expanduser(pattern) for pattern in patterns]
        self.start_at_end = start_at_end
        self.poll_interval_s = poll_interval_s
        self.max_line_bytes = max_line_bytes
        self.rotate_wait_s = rotate_wait_s
        self._resume = {saved.path: saved for saved in (offsets or {}).values()}
        self._files: dict[str, _Followed] = {}
        self._rotated: list[tuple[_Followed, float]] = []  # renamed away, read until the monotonic deadline
        self._first_poll = True
        self._backlog = False
        self._unreadable: set[str] = set()
        # Lines read but not yet returned: a poll cancelled while its thread runs leaves them for the next one.
        self._ready: list[Line] = []
        # The IO thread outlives a cancelled poll(), so an asyncio lock could not keep two passes apart.
        self._lock = threading.Lock()

    async def poll(self) -> list[Line]:
        """One pass over the files: (path, line) for every complete line added since the last pass."""
        await asyncio.to_thread(self._poll_sync)
        with self._lock:
            ready, self._ready = self._ready, []
        return ready

    async def follow(self) -> AsyncIterator[list[Line]]:
        """Poll forever, yielding each non-empty batch; polls again at once while a backlog remains."""
        while True:
            batch = await self.poll()
            if batch:
                yield batch
            if not self._backlog:
                await asyncio.sleep(self.poll_interval_s)

    @property
    def offsets(self) -> dict[str, FileOffset]:
        """Where each followed file stands, to persist and pass to a new follower (also after close())."""
        with self._lock:
            offsets = dict(self._resume)
            offsets.update((path, FileOffset(path, f.identity[1], f.offset)) for path, f in self._files.items())
            return offsets

    def close(self) -> None:
        """Close the open files. A later poll resumes from the offsets reached, like a new follower would."""
        with self._lock:
            for followed in self._files.values():
                followed.handle.close()
                self._resume[followed.path] = FileOffset(followed.path, followed.identity[1], followed.offset)
            self._files.clear()
            for followed, _ in self._rotated:
                followed.handle.close()
            self._rotated.clear()

    # --- the IO, run in a worker thread ---

    def _poll_sync(self) -> None:
        with self._lock:
            lines = self._ready
            self._backlog = False
            found = self._scan()
            at_path = {_identity(status): path for path, status in found.items()}
            kept: dict[str, _Followed] = {}
            rotated: list[tuple[_Followed, float]] = []
            now = time.monotonic()
            # Known files before new ones, rotated-away ones first, so a file's last lines precede its successor's.
            # A followed file has no deadline (inf) until it goes missing.
            known = self._rotated + [(followed, math.inf) for _, followed in sorted(self._files.items())]
            for followed, until in known:
                path = at_path.pop(followed.identity, None)
                if path is not None:
                    followed.path = path  # also when renamed within the patterns (app.log -> app.log.1)
                    self._read(followed, lines, size=found[path].st_size)
                    kept[path] = followed
                    continue
                if until == math.inf:  # just went missing: renamed away, or deleted (no waiting for those)
                    until = now + self.rotate_wait_s if not _deleted(followed) else now
                if now < until:
                    self._read(followed, lines)
                    rotated.append((followed, until))
                else:
                    # Deleted, or its wait is over: read what is left through the open handle, then let go.
                    self._read(followed, lines, final=True)
                    followed.handle.close()
            self._rotated = rotated
            for path in sorted(at_path.values()):
                followed = self._open(path)
                if followed is not None:
                    self._read(followed, lines)
                    kept[path] = followed
            self._files = kept
            self._first_poll = False
            # Saved offsets not taken up by now are for files that no longer exist.
            self._resume.clear()

    def _scan(self) -> dict[str, os.stat_result]:
        found: dict[str, os.stat_result] = {}
        for pattern in self.patterns:
            for path in glob.glob(pattern, recursive=True):
                if path in found:
                    continue
                try:
                    status = os.stat(path)
                except OSError:  # vanished since the glob, or a dangling link
                    continue
                if stat.S_ISREG(status.st_mode):
                    found[path] = status
        return found

    def _open(self, path: str) -> _Followed | None:
        try:
            handle = open(path, "rb")  # noqa: SIM115 - held open across polls on purpose
        except OSError as exc:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("cannot follow %s: %s", path, exc)
            return None
        self._unreadable.discard(path)
        # Identity from the handle, not the earlier stat: the path may have been rotated in between.
        status = os.fstat(handle.fileno())
        identity = _identity(status)
        saved = self._saved(path, status.st_ino)
        if saved is not None:
            start = saved.offset if saved.offset <= status.st_size else 0  # shorter now: truncated meanwhile
        elif self._first_poll and self.start_at_end:
            start = _last_line_start(handle, status.st_size)
        else:
            start = 0
        handle.seek(start)
        return _Followed(path, handle, identity, start)

    def _saved(self, path: str, inode: int) -> FileOffset | None:
        """The resumed offset for this file: under its own path, or under another if it was renamed since."""
        saved = self._resume.get(path)
        if saved is not None and saved.inode == inode:
            return self._resume.pop(path)
        for other, candidate in self._resume.items():
            if candidate.inode == inode:
                return self._resume.pop(other)
        return None

    def _read(self, followed: _Followed, lines: list[Line], *, size: int | None = None, final: bool = False) -> None:
        if size is not None:
            if size < followed.position or _rewritten(followed):
                # Truncated in place (copytruncate, `> file`), even if it has since grown past where we
                # were: deliver the partial line we hold, start over.
                self._flush(followed, lines)
                followed.handle.seek(0)
                followed.offset = 0
            elif size == followed.position:
                return
        budget = _MAX_READ_PER_POLL
        # A file being dropped is read to its end; others stop at the budget (the `else` below) and continue next poll.
        while final or budget > 0:
            try:
                chunk = followed.handle.read(_READ_CHUNK if final else min(_READ_CHUNK, budget))
            except OSError as exc:
                log.warning("reading %s failed: %s", followed.path, exc)
                break
            if not chunk:
                break
            budget -= len(chunk)
            self._split(followed, chunk, lines)
        else:
            self._backlog = True
        if final:
            self._flush(followed, lines)
        elif len(followed.head) < _HEAD_BYTES:
            followed.head = _pread(followed, _HEAD_BYTES)

    def _split(self, followed: _Followed, chunk: bytes, lines: list[Line]) -> None:
        data = followed.pending + chunk if followed.pending else chunk
        *complete, partial = data.split(b"\n")
        for raw in complete:
            self._emit(followed.path, raw, lines)
        followed.offset += len(data) - len(partial)
        # A line that never ends would be buffered forever: past the limit it is delivered in pieces.
        while len(partial) > self.max_line_bytes:
            cut = _utf8_boundary(partial, self.max_line_bytes)
            self._emit(followed.path, partial[:cut], lines)
            followed.offset += cut
            partial = partial[cut:]
        followed.pending = partial

    def _flush(self, followed: _Followed, lines: list[Line]) -> None:
        if followed.pending:
            self._emit(followed.path, followed.pending, lines)
            followed.offset += len(followed.pending)
            followed.pending = b""

    def _emit(self, path: str, raw: bytes, lines: list[Line]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        while len(raw) > self.max_line_bytes:
            cut = _utf8_boundary(raw, self.max_line_bytes)
            lines.append((path, raw[:cut].decode("utf-8", "replace")))
            raw = raw[cut:]
        lines.append((path, raw.decode("utf-8", "replace")))


def _last_line_start(handle: BinaryIO, size: int) -> int:
    """Where an unfinished last line starts (else `size`): starting at the end, that line is still delivered whole."""
    window = min(size, _READ_CHUNK)
    handle.seek(size - window)
    tail = handle.read(window)
    newline = tail.rfind(b"\n")
    if newline >= 0:
        return size - window + newline + 1
    return 0 if window == size else size


def _rewritten(followed: _Followed) -> bool:
    return bool(followed.head) and _pread(followed, len(followed.head)) != followed.head


def _pread(followed: _Followed, length: int) -> bytes:
    try:
        return os.pread(followed.handle.fileno(), length, 0)
    except OSError:
        return followed.head


def _deleted(followed: _Followed) -> bool:
    try:
        return os.fstat(followed.handle.fileno()).st_nlink == 0
    except OSError:
        return True


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _utf8_boundary(data: bytes, limit: int) -> int:
    """A cut at or up to 3 bytes before `limit` (len(data) > limit) that does not split a UTF-8 character;
    continuation bytes are 0b10xxxxxx. Not UTF-8 at all: cut at `limit`."""
    for cut in range(limit, max(limit - 4, 0), -1):
        if data[cut] & 0xC0 != 0x80:
            return cut
    return limit
