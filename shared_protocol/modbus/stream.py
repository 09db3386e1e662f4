"""Finding Modbus RTU frames in a byte stream, h11 style: bytes in, events out.

One job: cut an unframed RTU byte stream into :class:`~shared_protocol.modbus.framing.Frame`
events and :class:`~shared_protocol.stream.Discarded` runs.

RTU has no start or end byte; on the wire a frame ends with 3.5 characters of silence,
which a USB adapter and the OS blur. So the parser finds frames by content:

1. The first bytes (unit id, function code, and for 03/04 responses and 16 requests the
   byte count) fix the expected length (:func:`~shared_protocol.modbus.framing.expected_length`).
   A unit id outside 0/1..247, a function we do not speak or an impossible byte count means
   "no frame starts here".
2. When that many bytes are buffered, the CRC-16 and the structure are checked.
3. On any failure the parser drops *one* byte and tries again from the next one (sliding
   resync), so a frame right after line noise, or after a frame with a bad CRC, is still
   found. Skipped bytes come out as one ``Discarded`` run before the next frame.

Because a noise byte can look like the start of a long frame, the caller may tell the
parser the line went quiet (:meth:`StreamParser.line_idle`, after t3.5 of silence): then
nothing buffered can still grow into a frame, and a partial candidate is dropped instead of
waited for. :meth:`StreamParser.close` does the same for the end of the stream.

The parser needs to know whether it reads requests (a meter or a sniffer on the master's
side) or responses (the bus master): an 8-byte 03 request and a 03 response share their
first two bytes. No candidate is ever longer than the 256-byte maximum RTU frame, so the
parser never waits for more than 256 bytes before deciding.
"""

from __future__ import annotations

from shared_protocol.errors import LocalProtocolError, RemoteProtocolError
from shared_protocol.modbus.framing import Direction, Frame, decode_frame, expected_length
from shared_protocol.stream import NEED_DATA, Discarded, NeedData

__all__ = ["StreamParser"]


class StreamParser:
    """Turns received bytes into :class:`Frame`, :class:`Discarded` or ``NEED_DATA``."""

    def __init__(self, direction: Direction | str) -> None:
        try:
            self.direction = Direction(direction)
        except ValueError:
            raise LocalProtocolError(
                f"direction must be 'request' or 'response', not {direction!r}"
            ) from None
        self._buffer = bytearray()
        self._skipped = bytearray()
        self._first_reason = ""
        self._idle = False
        self._closed = False

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the line, in any chunking."""
        if self._closed:
            raise LocalProtocolError("receive_data() after close(); make a new StreamParser")
        if data:
            self._buffer += data
            self._idle = False

    def line_idle(self) -> None:
        """The line has been silent for t3.5: whatever is buffered is all there is."""
        self._idle = True

    def close(self) -> None:
        """End of stream: leftover bytes come out as ``Discarded``, then ``NEED_DATA``."""
        self._closed = True
        self._idle = True

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a candidate frame."""
        return len(self._buffer) + len(self._skipped)

    def next_event(self) -> Frame | Discarded | NeedData:
        """The next frame or discarded run, or ``NEED_DATA``; never raises for line bytes."""
        while self._buffer:
            try:
                length = expected_length(self._buffer, self.direction)
            except RemoteProtocolError as exc:
                self._skip(str(exc))
                continue
            if length is None or len(self._buffer) < length:
                if not self._idle:
                    break
                self._skip("frame cut short by a silent line or the end of the stream")
                continue
            candidate = bytes(self._buffer[:length])
            try:
                frame = decode_frame(candidate, self.direction)
            except RemoteProtocolError as exc:
                self._skip(str(exc))
                continue
            if self._skipped:
                return self._flush()
            del self._buffer[:length]
            return frame
        if self._skipped:
            return self._flush()
        return NEED_DATA

    def _skip(self, reason: str) -> None:
        # The first reason is the one that matters (why the run started); later ones are
        # the resync sliding through the rest of the bad bytes.
        if not self._skipped:
            self._first_reason = reason
        self._skipped.append(self._buffer.pop(0))

    def _flush(self) -> Discarded:
        data = bytes(self._skipped)
        reason = self._first_reason
        if len(data) > 1:
            reason = f"{reason} (skipped {len(data)} bytes to resynchronise)"
        self._skipped.clear()
        return Discarded(data, reason)
