"""Socket frame codec: ``<STX><DATA><ETX><LRC>``, shared by Monitor, Central and Engine.

Pure bytes in, values out: no asyncio, no sockets, so every rule is unit-testable and the
transport (``adapters/sockets/framing.py``) only moves bytes.  See ``docs/socket-protocol.md``.

Rules, in one place:

* ``DATA`` is ``OPCODE#field1#...#fieldN`` in UTF-8.  The opcode is non-empty; no part may
  contain ``#``, STX or ETX (the separator and the framing bytes), so framing never needs escaping.
* ``LRC`` is the XOR of the DATA bytes only.  STX and ETX are *not* included: they are constants,
  so XOR-ing them in would add no detection power, only a rule to get wrong.
* The LRC byte may take any value, including 0x02/0x03; it is recognised by position (the byte
  after ETX), not by value.
* The whole frame (STX + DATA + ETX + LRC) must fit in ``max_size`` bytes (default 1024).
* Free text bound for a field (a fault reason, a refusal) goes through ``wire_text`` first, the
  one scrub of the reserved characters; a value that must arrive intact (an id, a location) is
  checked instead (``reserved_char``) and refused where it is entered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, auto
from functools import reduce
from operator import xor
from typing import Literal

STX = 0x02
ETX = 0x03
ACK = 0x06
NACK = 0x15
SEPARATOR = "#"
MAX_FRAME_SIZE = 1024
_OVERHEAD = 3  # STX + ETX + LRC
_RESERVED = (SEPARATOR, chr(STX), chr(ETX))
_RESERVED_RE = re.compile("[" + re.escape("".join(_RESERVED)) + "]")
MAX_TEXT = 200  # characters of free text in one field (`wire_text`): a reason, not a document

Reason = Literal[
    "garbage",  # bytes outside any frame (before an STX)
    "truncated",  # a frame cut short by a new STX, or input ended inside it
    "oversize",  # the frame grew beyond max_size; its bytes are discarded
    "bad_lrc",  # the LRC byte does not match DATA
    "empty",  # nothing between STX and ETX
    "not_utf8",  # DATA is not valid UTF-8
    "no_opcode",  # DATA starts with the separator
    "multiple_frames",  # decode() was given more than one frame
]


class FrameError(ValueError):
    """A malformed frame.  Returned (not raised) by ``FrameDecoder.feed``; raised by ``decode``."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Frame:
    """One well-formed message: ``opcode`` and its positional ``fields``."""

    opcode: str
    fields: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return encode(self.opcode, *self.fields)

    def __str__(self) -> str:  # as on the wire, for log lines
        return SEPARATOR.join((self.opcode, *self.fields))


def lrc(data: bytes) -> int:
    """XOR of all bytes of ``data`` (the DATA part only; 0 for empty data)."""
    return reduce(xor, data, 0)


def encode(opcode: str, *fields: str) -> bytes:
    """Build one frame; ``ValueError`` if a part contains ``#``, STX or ETX, or the opcode is empty."""
    if not opcode:
        raise ValueError("opcode must not be empty")
    _check_parts((opcode, *fields))
    data = SEPARATOR.join((opcode, *fields)).encode("utf-8")
    return b"%c%b%c%c" % (STX, data, ETX, lrc(data))


def _check_parts(parts: Iterable[str]) -> None:
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"frame parts must be str, got {type(part).__name__}: {part!r}")
        bad = reserved_char(part)
        if bad:
            raise ValueError(f"reserved character {bad!r} in frame part {part!r}")


def reserved_char(text: str) -> str | None:
    """The first character of `text` a frame part may not hold ('#', STX, ETX), or None."""
    bad = _RESERVED_RE.search(text)
    return bad.group() if bad else None


def wire_text(text: str) -> str:
    """Free text made fit for a frame field: each '#', STX or ETX becomes a space, and the text
    is cut to `MAX_TEXT` characters (a reason read by a person, never parsed)."""
    return _RESERVED_RE.sub(" ", text)[:MAX_TEXT]


def parse_data(data: bytes) -> Frame | FrameError:
    """Turn the DATA bytes of a frame whose LRC already matched into a Frame (or say why not)."""
    if not data:
        return FrameError("empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FrameError("not_utf8", str(exc))
    opcode, *fields = text.split(SEPARATOR)
    if not opcode:
        return FrameError("no_opcode", text[:40])
    return Frame(opcode, tuple(fields))


class _State(Enum):
    HUNT = auto()  # outside a frame, waiting for STX
    DATA = auto()  # after STX, collecting DATA until ETX
    LRC = auto()  # after ETX, the next byte is the LRC


class FrameDecoder:
    """Incremental decoder for a byte stream; never raises, whatever the input or its chunking.

    Each problem yields one ``FrameError`` in stream order, then the decoder resynchronises on
    the next STX.  A run of garbage bytes gives one error however it is split across ``feed``
    calls, so the number of NACKs a peer gets does not depend on TCP segmentation.
    """

    def __init__(self, max_size: int = MAX_FRAME_SIZE) -> None:
        if max_size <= _OVERHEAD:
            raise ValueError(f"max_size must exceed {_OVERHEAD} bytes, got {max_size}")
        self.max_size = max_size
        self._state = _State.HUNT
        self._buf = bytearray()
        self._xor = 0
        self._overflow = False  # current frame already reported as oversize
        self._garbage_reported = False  # current garbage run already reported

    @property
    def in_frame(self) -> bool:
        """True while part of a frame has been read (useful to tell EOF from EOF mid-frame)."""
        return self._state is not _State.HUNT

    def feed(self, chunk: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        start = 0
        while start < len(chunk):
            if self._state is _State.HUNT and chunk[start] == STX:
                end = self._whole_frame_end(chunk, start)
                if end:  # fast path: a whole, well-delimited frame; same result as byte by byte
                    data = chunk[start + 1 : end - 2]
                    self._garbage_reported = False
                    out.append(_checked(data, chunk[end - 1]))
                    start = end
                    continue
            result = self._step(chunk[start])
            if result is not None:
                out.append(result)
            start += 1
        return out

    def _whole_frame_end(self, chunk: bytes, start: int) -> int:
        """End index (exclusive) of a complete frame at `start`, if it needs no special handling."""
        etx = chunk.find(ETX, start + 1, start + self.max_size)
        if etx < 0 or etx + 1 >= len(chunk) or chunk.find(STX, start + 1, etx) >= 0:
            return 0
        if chunk[etx + 1] == STX or etx + 2 - start > self.max_size:
            return 0
        return etx + 2

    def _step(self, byte: int) -> Frame | FrameError | None:
        if self._state is _State.HUNT:
            return self._hunt(byte)
        if self._state is _State.DATA:
            return self._data(byte)
        return self._lrc(byte)

    def _hunt(self, byte: int) -> FrameError | None:
        if byte == STX:
            self._start()
            return None
        if self._garbage_reported:
            return None
        self._garbage_reported = True
        return FrameError("garbage", f"byte 0x{byte:02x} outside a frame")

    def _data(self, byte: int) -> FrameError | None:
        if byte == STX:  # a new frame starts: the current one was cut short
            error = None if self._overflow else FrameError("truncated", "STX inside a frame")
            self._start()
            return error
        if byte == ETX:
            self._state = _State.LRC
            return None
        self._xor ^= byte
        if self._overflow:
            return None
        if len(self._buf) + 1 + _OVERHEAD > self.max_size:
            self._overflow = True
            self._buf.clear()
            return FrameError("oversize", f"frame longer than {self.max_size} bytes")
        self._buf.append(byte)
        return None

    def _lrc(self, byte: int) -> Frame | FrameError | None:
        matches = byte == self._xor
        if byte == STX and not matches:  # LRC missing: this STX opens the next frame
            error = None if self._overflow else FrameError("bad_lrc", "missing LRC")
            self._start()
            return error
        self._state = _State.HUNT
        self._garbage_reported = False
        if self._overflow:
            return None
        if not matches:
            return FrameError("bad_lrc", f"got 0x{byte:02x}, expected 0x{self._xor:02x}")
        return parse_data(bytes(self._buf))

    def _start(self) -> None:
        self._state = _State.DATA
        self._buf.clear()
        self._xor = 0
        self._overflow = False
        self._garbage_reported = False


def _checked(data: bytes, received_lrc: int) -> Frame | FrameError:
    expected = lrc(data)
    if received_lrc != expected:
        return FrameError("bad_lrc", f"got 0x{received_lrc:02x}, expected 0x{expected:02x}")
    return parse_data(data)


def decode(raw: bytes, max_size: int = MAX_FRAME_SIZE) -> Frame:
    """Decode exactly one whole frame; ``FrameError`` if ``raw`` is anything else."""
    decoder = FrameDecoder(max_size)
    results = decoder.feed(raw)
    errors = [r for r in results if isinstance(r, FrameError)]
    if errors:
        raise errors[0]
    frames = [r for r in results if isinstance(r, Frame)]
    if decoder.in_frame or not frames:
        raise FrameError("truncated", "input ended inside a frame")
    if len(frames) > 1:
        raise FrameError("multiple_frames", f"{len(frames)} frames")
    return frames[0]
