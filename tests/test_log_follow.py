"""FileFollower on real files: appends, partial lines, rotation, truncation, files appearing and vanishing,
resuming from offsets, and bytes that are not UTF-8."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops_agent.tools.logs.ingest.follow import FileFollower, FileOffset

Follow = Callable[..., FileFollower]


@pytest.fixture
def follow() -> Iterator[Follow]:
    """FileFollower(...), closed after the test whatever happens in it (followers hold files open)."""
    followers: list[FileFollower] = []

    def make(*args, **kwargs) -> FileFollower:
        followers.append(FileFollower(*args, **kwargs))
        return followers[-1]

    yield make
    for follower in followers:
        follower.close()


def append(path: Path, data: str | bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def texts(batch: list[tuple[str, str]]) -> list[str]:
    return [line for _, line in batch]


async def test_appends_and_partial_lines(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "one\ntwo\r\nthr")
    follower = follow([str(log)])
    assert await follower.poll() == [(str(log), "one"), (str(log), "two")]
    assert await follower.poll() == []
    append(log, "ee\nfour")
    assert texts(await follower.poll()) == ["three"]
    append(log, "\n")
    assert texts(await follower.poll()) == ["four"]
    assert follower.offsets == {str(log): FileOffset(str(log), log.stat().st_ino, log.stat().st_size)}


async def test_rename_rotation_delivers_the_old_files_last_lines(tmp_path, follow):
    log = tmp_path / "app.log"
    writer = log.open("ab", buffering=0)
    writer.write(b"1\n2\n")
    follower = follow([str(log)], rotate_wait_s=0)
    assert texts(await follower.poll()) == ["1", "2"]
    writer.write(b"3\npart")
    os.rename(log, tmp_path / "app.log.1")
    writer.write(b"ial\n4\nunfinished")  # the writer has not reopened yet
    writer.close()
    append(log, "new 1\n")
    batch = await follower.poll()
    assert batch == [(str(log), "3"), (str(log), "partial"), (str(log), "4"), (str(log), "unfinished"), (str(log), "new 1")]
    append(log, "new 2\n")
    assert texts(await follower.poll()) == ["new 2"]
    assert follower.offsets[str(log)].inode == log.stat().st_ino


async def test_rotated_file_is_read_until_the_writer_reopens(tmp_path, follow):
    log = tmp_path / "app.log"
    writer = log.open("ab", buffering=0)
    writer.write(b"1\n")
    follower = follow([str(log)], rotate_wait_s=0.6)
    assert texts(await follower.poll()) == ["1"]
    os.rename(log, tmp_path / "app.log.1")
    append(log, "")  # logrotate's `create`: the new file exists before the writer reopens
    writer.write(b"2\nhalf")
    assert texts(await follower.poll()) == ["2"]
    writer.write(b" line\n3\nlast")  # still writing to the renamed file
    assert texts(await follower.poll()) == ["half line", "3"]
    writer.close()
    writer = log.open("ab", buffering=0)  # reopened
    writer.write(b"4\n")
    assert texts(await follower.poll()) == ["4"]
    await asyncio.sleep(0.65)
    assert texts(await follower.poll()) == ["last"]  # the wait is over: the partial line is flushed
    writer.write(b"5\n")
    writer.close()
    assert await follower.poll() == [(str(log), "5")]


async def test_rotation_within_the_pattern_is_not_read_twice(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "a\n")
    follower = follow([str(tmp_path / "app.log*")])
    assert texts(await follower.poll()) == ["a"]
    os.rename(log, tmp_path / "app.log.1")
    append(tmp_path / "app.log.1", "b\n")
    append(log, "c\n")
    assert await follower.poll() == [(str(tmp_path / "app.log.1"), "b"), (str(log), "c")]
    assert set(follower.offsets) == {str(log), str(tmp_path / "app.log.1")}


async def test_copytruncate(tmp_path, follow):
    log = tmp_path / "app.log"
    writer = log.open("ab", buffering=0)  # O_APPEND, as loggers open files, so writes follow the truncation
    writer.write(b"first line\nsecond line\n")
    follower = follow([str(log)])
    assert texts(await follower.poll()) == ["first line", "second line"]
    shutil.copyfile(log, tmp_path / "app.log.1")
    with log.open("r+b") as handle:
        handle.truncate(0)
    writer.write(b"after\n")
    writer.close()
    assert texts(await follower.poll()) == ["after"]
    assert follower.offsets[str(log)].offset == len(b"after\n")


async def test_truncation_restarts_at_zero_and_flushes_the_partial_line(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "a fairly long line\nhalf a li")
    follower = follow([str(log)])
    assert texts(await follower.poll()) == ["a fairly long line"]
    log.write_bytes(b"x\n")
    assert texts(await follower.poll()) == ["half a li", "x"]


async def test_a_truncation_that_regrew_past_the_offset_is_noticed(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "first run line\n")
    follower = follow([str(log)])
    assert texts(await follower.poll()) == ["first run line"]
    log.write_bytes(b"second run: a longer line than before\n")  # truncated and rewritten between two polls
    assert texts(await follower.poll()) == ["second run: a longer line than before"]
    append(log, "and then appended\n")
    assert texts(await follower.poll()) == ["and then appended"]


async def test_new_files_matching_the_glob_are_picked_up(tmp_path, follow):
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    follower = follow([str(tmp_path / "**" / "*.log")])
    assert await follower.poll() == []
    append(tmp_path / "a.log", "in a\n")
    append(tmp_path / "nested" / "deeper" / "b.log", "in b\n")
    append(tmp_path / "c.txt", "not matched\n")
    (tmp_path / "dir.log").mkdir()  # directories are not followed
    assert sorted(await follower.poll()) == [
        (str(tmp_path / "a.log"), "in a"),
        (str(tmp_path / "nested" / "deeper" / "b.log"), "in b"),
    ]


async def test_start_at_end_skips_only_what_existed_at_the_first_poll(tmp_path, follow):
    old = tmp_path / "old.log"
    append(old, "history\npartial history")
    follower = follow([str(tmp_path / "*.log")], start_at_end=True)
    assert await follower.poll() == []
    append(old, "\nfresh\n")
    append(tmp_path / "new.log", "from the start\n")
    assert sorted(texts(await follower.poll())) == ["fresh", "from the start", "partial history"]


async def test_tilde_is_expanded(tmp_path, follow, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    append(tmp_path / "home.log", "at home\n")
    follower = follow(["~/*.log"])
    assert await follower.poll() == [(str(tmp_path / "home.log"), "at home")]


async def test_deleted_file_is_drained_then_dropped(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "kept\n")
    follower = follow([str(tmp_path / "*.log")])
    assert texts(await follower.poll()) == ["kept"]
    append(log, "last words\nno newline")
    log.unlink()
    assert texts(await follower.poll()) == ["last words", "no newline"]
    assert follower.offsets == {}
    assert await follower.poll() == []


async def test_resume_from_offsets(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "one\ntwo\npar")
    first = follow([str(log)])
    assert texts(await first.poll()) == ["one", "two"]
    saved = first.offsets
    assert saved[str(log)].offset == len(b"one\ntwo\n")  # the partial line is not counted as read
    first.close()
    append(log, "tial\nthree\n")
    second = follow([str(log)], offsets=saved, start_at_end=True)  # saved offsets win over start_at_end
    assert texts(await second.poll()) == ["partial", "three"]


async def test_resume_when_the_file_was_rotated_or_truncated_meanwhile(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "old 1\nold 2\n")
    first = follow([str(tmp_path / "app.log*")])
    await first.poll()
    saved = first.offsets
    first.close()
    append(log, "old 3\n")
    os.rename(log, tmp_path / "app.log.1")  # rotated while nobody was following
    append(log, "new 1\n")
    second = follow([str(tmp_path / "app.log*")], offsets=saved)
    assert sorted(texts(await second.poll())) == ["new 1", "old 3"]
    saved = second.offsets
    second.close()
    (tmp_path / "app.log.1").unlink()
    log.write_bytes(b"n\n")  # truncated below the saved offset
    third = follow([str(log)], offsets=saved)
    assert texts(await third.poll()) == ["n"]
    assert set(third.offsets) == {str(log)}  # the deleted file's offset is dropped


async def test_close_then_poll_resumes(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "a\n")
    follower = follow([str(log)])
    await follower.poll()
    follower.close()
    assert follower.offsets[str(log)].offset == 2
    append(log, "b\n")
    assert texts(await follower.poll()) == ["b"]


async def test_undecodable_bytes_are_replaced(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, b"ok \xff\xfe bad \xe2\x82\n\x00nul\n")
    follower = follow([str(log)])
    assert texts(await follower.poll()) == ["ok \ufffd\ufffd bad \ufffd", "\x00nul"]


async def test_overlong_lines_are_split_not_buffered_forever(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "x" * 25)
    follower = follow([str(log)], max_line_bytes=10)
    assert texts(await follower.poll()) == ["x" * 10, "x" * 10]
    assert follower.offsets[str(log)].offset == 20
    append(log, "y\n" + "é" * 8 + "\n")  # 16 bytes of two-byte characters: cut between characters
    assert texts(await follower.poll()) == ["xxxxxy", "é" * 5, "é" * 3]


async def test_a_large_backlog_arrives_over_several_polls(tmp_path, follow):
    log = tmp_path / "big.log"
    line = b"%07d " + b"z" * 56 + b"\n"
    count = 300_000  # 19.2 MB, more than one poll reads from a file
    log.write_bytes(b"".join(line % i for i in range(count)))
    follower = follow([str(log)])
    first = await follower.poll()
    assert 0 < len(first) < count
    rest = await follower.poll()
    assert len(first) + len(rest) == count
    assert rest[-1][1].startswith("%07d " % (count - 1))


async def test_follow_yields_batches(tmp_path, follow):
    log = tmp_path / "app.log"
    append(log, "hello\n")
    follower = follow([str(log)], poll_interval_s=0.01)
    batches = follower.follow()
    assert texts(await asyncio.wait_for(anext(batches), 5)) == ["hello"]
    append(log, "again\n")
    assert texts(await asyncio.wait_for(anext(batches), 5)) == ["again"]
    await batches.aclose()
