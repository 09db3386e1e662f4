"""Turn a byte stream (serial, TCP, a capture file) into 698.45 frames, h11 style.

``receive_data(bytes)`` feeds bytes in any chunking, ``receive_data(b"")`` marks the end
of the stream, and ``next_event()`` returns a :class:`~shared_protocol.dlt698.frame.Frame`,
a :class:`~shared_protocol.stream.Discarded` run of bytes, or ``NEED_DATA``. The header
check sum (HCS) is checked as soon as the header is in, so a stray ``68`` in line noise is
dropped without waiting for the length it pretends to announce.
"""

from __future__ import annotations

from typing import Final

from shared_protocol.dlt698.frame import (
    END,
    MAX_FRAME_LENGTH,
    PREAMBLE,
    START,
    Frame,
    decode_frame,
    decode_header,
)
from shared_protocol.errors import LocalProtocolError, RemoteProtocolError
from shared_protocol.stream import NEED_DATA, Discarded, NeedData

__all__ = ["MAX_BUFFER", "StreamParser"]

# The most bytes one pending frame can occupy (L ≤ 0x3FFF, plus 68, 16 and a preamble):
# the parser never waits for more than this before deciding frame-or-noise.
MAX_BUFFER: Final = MAX_FRAME_LENGTH + 2 + 64
# Bytes needed to read AF and so learn the header's length.
_MIN_HEADER: Final = 5

Event = Frame | Discarded | NeedData


class StreamParser:
    """Incremental 698.45 frame parser; see the module docstring."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream (b'') was signalled")
        if not data:
            self._eof = True
            return
        self._buf += data

    def _discard(self, n: int, reason: str) -> Discarded:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return Discarded(chunk, reason)

    def _drop_to_next_start(self, reason: str) -> Discarded:
        """Drop the false/bad 68 and everything up to the next candidate 68."""
        nxt = self._buf.find(START, 1)
        if nxt < 0:
            return self._discard(len(self._buf), reason)
        while nxt > 1 and self._buf[nxt - 1] == PREAMBLE:
            nxt -= 1  # keep the next frame's FE preamble out of the discarded bytes
        return self._discard(nxt, reason)

    def next_event(self) -> Event:
        buf = self._buf
        # Skip the FE wake-up preamble silently: it is part of a normal frame.
        while buf[:1] == bytes([PREAMBLE]):
            del buf[0]
        if not buf:
            return NEED_DATA
        if buf[0] != START:
            start = buf.find(START)
            end = len(buf) if start < 0 else start
            # FE right before a 68 is that frame's preamble, not noise (buf[0] is not FE,
            # so this stops at 1 at the latest).
            while start >= 0 and buf[end - 1] == PREAMBLE:
                end -= 1
            return self._discard(end, "noise before a 68 start byte")
        if len(buf) < _MIN_HEADER:
            return self._need_more("truncated frame at end of stream")
        sa_len = (buf[4] & 0x0F) + 1
        header_end = _MIN_HEADER + sa_len + 3
        if len(buf) < header_end:
            return self._need_more("truncated frame header at end of stream")
        try:
            header = decode_header(bytes(buf[:header_end]))
        except RemoteProtocolError as exc:
            return self._drop_to_next_start(f"bad frame header: {exc}")
        total = header.length + 2
        if len(buf) < total:
            # total ≤ MAX_BUFFER by L's 14 bits, so waiting here is bounded.
            return self._need_more("truncated frame at end of stream")
        if buf[total - 1] != END:
            return self._drop_to_next_start(f"no 16 end byte where L={header.length} puts it")
        try:
            frame = decode_frame(bytes(buf[:total]))
        except RemoteProtocolError as exc:
            return self._drop_to_next_start(f"bad frame: {exc}")
        del buf[:total]
        return frame

    def _need_more(self, eof_reason: str) -> Discarded | NeedData:
        if self._eof:
            # No more bytes will come: the partial frame is lost; resync on a later 68.
            return self._drop_to_next_start(eof_reason)
        return NEED_DATA
