"""A sans-I/O stream parser for DL/T 645: bytes in any chunking → Frame / Discarded events.

Usage (h11 style)::

    parser = StreamParser()
    parser.receive_data(chunk)          # b"" means the line closed (EOF)
    while (event := parser.next_event()) is not NEED_DATA:
        ...                             # a Frame, or Discarded(bytes, reason)

FE wake-up bytes are skipped silently. Anything else that is not a frame is handed back as
:class:`~shared_protocol.stream.Discarded` with a reason, and the parser resynchronises on
the next 68H *after the rejected start byte*, so a false 68 inside noise never swallows the
real frame that follows it.
"""

from __future__ import annotations

from typing import Final

from shared_protocol.dlt645.frame import (
    MAX_FRAME_SIZE,
    PREAMBLE_BYTE,
    START,
    Frame,
    parse_frame_at,
)
from shared_protocol.errors import LocalProtocolError, RemoteProtocolError
from shared_protocol.stream import NEED_DATA, Discarded, NeedData

__all__ = ["MAX_BUFFER", "StreamParser"]

# The parser only keeps bytes while a frame candidate is incomplete, and a candidate can
# never be longer than the largest legal frame (L ≤ 200). Bytes beyond that are a caller
# feeding far ahead of next_event(); we cap it so a runaway serial read cannot grow memory.
MAX_BUFFER: Final = 64 * MAX_FRAME_SIZE


class StreamParser:
    """Turns a byte stream from a serial line into DL/T 645 frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._closed = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the line; ``b""`` means end of stream."""
        if self._closed:
            if data:
                raise LocalProtocolError("receive_data() after end of stream (b'')")
            return
        if not data:
            self._closed = True
            return
        if len(self._buffer) + len(data) > MAX_BUFFER:
            raise LocalProtocolError(
                f"more than {MAX_BUFFER} bytes buffered: call next_event() until NEED_DATA"
                " before feeding more"
            )
        self._buffer += data

    def next_event(self) -> Frame | Discarded | NeedData:
        buffer = self._buffer
        # FE bytes are wake-up preamble, not noise.
        skip = 0
        while skip < len(buffer) and buffer[skip] == PREAMBLE_BYTE:
            skip += 1
        if skip:
            del buffer[:skip]
        if not buffer:
            return NEED_DATA
        if buffer[0] != START:
            return self._discard(self._next_start(0), "noise before a frame start (68)")
        try:
            parsed = parse_frame_at(buffer, 0)
        except RemoteProtocolError as exc:
            return self._discard(self._next_start(1), str(exc))
        if parsed is None:
            later = self._complete_frame_after_start()
            if later is not None:
                # A false 68 in noise can claim a length that runs over the real frame
                # behind it; waiting for it would stall the bus until the next reply.
                return self._discard(later, "a 68 that starts no frame (a complete frame follows)")
            if self._closed:
                return self._discard(len(buffer), "stream ended inside a frame")
            return NEED_DATA
        frame, end = parsed
        del buffer[:end]
        return frame

    def _complete_frame_after_start(self) -> int | None:
        index = self._buffer.find(START, 1)
        while index >= 0:
            try:
                if parse_frame_at(self._buffer, index) is not None:
                    return self._before_preamble(index, 1)
            except RemoteProtocolError:
                pass
            index = self._buffer.find(START, index + 1)
        return None

    def _next_start(self, after: int) -> int:
        """Where the next frame may begin: its 68, or the FE preamble just before it.

        Trailing FE bytes are kept even when no 68 has arrived yet, so the same bytes are
        reported as noise however the line chunks them.
        """
        found = self._buffer.find(START, after)
        return self._before_preamble(len(self._buffer) if found < 0 else found, after)

    def _before_preamble(self, index: int, floor: int) -> int:
        while index > floor and self._buffer[index - 1] == PREAMBLE_BYTE:
            index -= 1
        return index

    def _discard(self, count: int, reason: str) -> Discarded:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return Discarded(data, reason)
