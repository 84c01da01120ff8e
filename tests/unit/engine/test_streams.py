"""streams.stream_in: a readable into a REAL command's stdin, with a reader thread ahead of the writer."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import pytest

from scripts.core.errors import AirgapError
from scripts.engine.streams import stream_in


class Source(io.RawIOBase):
    """``total`` pseudo-random bytes in reads of any size; raises after ``fail_after`` bytes if set."""

    def __init__(self, total: int, fail_after: int | None = None) -> None:
        self.data = os.urandom(total)
        self.pos, self.fail_after = 0, fail_after
        self.threads: set[str] = set()

    def read(self, size: int = -1) -> bytes:
        self.threads.add(threading.current_thread().name)
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise ValueError(f"corrupt input at byte {self.pos}")
        block = self.data[self.pos:self.pos + (size if size >= 0 else len(self.data))]
        self.pos += len(block)
        return block


def test_every_byte_arrives_in_order_and_is_read_by_the_reader_thread():
    src = Source(9 * (1 << 20) + 12345)
    out = stream_in(["sha256sum"], src, chunk=1 << 20, ahead=2)
    assert out.split()[0] == hashlib.sha256(src.data).hexdigest()
    assert src.threads == {"stream_in-reader"}


def test_an_error_of_the_source_is_raised_after_the_command_ended():
    src = Source(4 << 20, fail_after=2 << 20)
    with pytest.raises(ValueError, match="corrupt input at byte 2097152"):
        stream_in(["sh", "-c", "cat > /dev/null"], src, chunk=1 << 20)


def test_a_command_that_stops_reading_is_named():
    with pytest.raises(AirgapError) as info:
        stream_in(["sh", "-c", "head -c 10 > /dev/null; echo 'load: bad tar header' >&2; exit 3"],
                  Source(8 << 20), chunk=1 << 20)
    assert "bad tar header" in str(info.value)


def test_an_empty_source_closes_stdin_at_once():
    assert stream_in(["wc", "-c"], Source(0)).strip() == "0"
