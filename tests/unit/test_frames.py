"""The socket frame codec: LRC rule, encode/decode, and the incremental decoder's resync."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evcharging.contracts.frames import (
    ETX,
    MAX_FRAME_SIZE,
    STX,
    Frame,
    FrameDecoder,
    FrameError,
    decode,
    encode,
    lrc,
)

_part_chars = st.characters(exclude_characters="#\x02\x03", exclude_categories=["Cs"])
opcodes = st.text(_part_chars, min_size=1, max_size=20)
fields = st.lists(st.text(_part_chars, max_size=30), max_size=4)
frames = st.builds(lambda op, fs: Frame(op, tuple(fs)), opcodes, fields)


def outcome(results: list[Frame | FrameError]) -> list[Frame | str]:
    """Comparable form of decoder output: frames as they are, errors by reason."""
    return [r.reason if isinstance(r, FrameError) else r for r in results]


def feed_in_chunks(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> list[Frame | str]:
    bounds = [0, *sorted(cuts), len(stream)]
    results: list[Frame | FrameError] = []
    for start, end in itertools.pairwise(bounds):
        results += decoder.feed(stream[start:end])
    return outcome(results)


# --- LRC rule ----------------------------------------------------------------------------------


def test_lrc_is_xor_of_data_bytes() -> None:
    assert lrc(b"") == 0
    assert lrc(b"OK") == 0x4F ^ 0x4B == 0x04


@pytest.mark.parametrize(
    ("parts", "wire"),
    [
        (("HB", "CP01", "OK"), "02 48 42 23 43 50 30 31 23 4f 4b 03 1c"),
        (("OK",), "02 4f 4b 03 04"),
        (
            ("AUTH", "CP01", "Madrid", "0.35"),
            "02 41 55 54 48 23 43 50 30 31 23 4d 61 64 72 69 64 23 30 2e 33 35 03 16",
        ),
        (("AC",), "02 41 43 03 02"),
    ],
)
def test_documented_examples(parts: tuple[str, ...], wire: str) -> None:
    """The hex examples of docs/socket-protocol.md."""
    assert encode(*parts).hex(" ") == wire
    assert decode(bytes.fromhex(wire)) == Frame(parts[0], parts[1:])


@given(frames)
def test_lrc_covers_data_only_not_stx_etx(frame: Frame) -> None:
    raw = frame.to_bytes()
    assert raw[0] == STX
    assert raw[-2] == ETX
    assert raw[-1] == lrc(raw[1:-2])


# --- encode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["#", "\x02", "\x03", "a#b", "x\x03"])
def test_encode_rejects_reserved_characters_in_fields(bad: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode("HB", "CP01", bad)


@pytest.mark.parametrize("bad", ["", "A#B", "\x02", "OK\x03"])
def test_encode_rejects_bad_opcodes(bad: str) -> None:
    with pytest.raises(ValueError, match=r"opcode|reserved"):
        encode(bad)


def test_encode_rejects_non_str_fields() -> None:
    with pytest.raises(TypeError, match="str"):
        encode("AUTH", "CP01", "Madrid", 0.35)  # type: ignore[arg-type]


# --- decode ------------------------------------------------------------------------------------


@given(opcodes, fields)
def test_encode_decode_round_trip(opcode: str, parts: list[str]) -> None:
    raw = encode(opcode, *parts)
    assert decode(raw, max_size=len(raw)) == Frame(opcode, tuple(parts))


@given(st.binary(max_size=64))
def test_decode_of_any_bytes_is_a_frame_that_re_encodes_exactly_or_a_frame_error(
    raw: bytes,
) -> None:
    try:
        frame = decode(raw)
    except FrameError:
        return
    assert frame.to_bytes() == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "truncated"),
        (b"\x02OK", "truncated"),
        (b"\x02OK\x03", "truncated"),
        (b"OK\x03\x04", "garbage"),
        (b"\x02OK\x03\x05", "bad_lrc"),
        (b"\x02\x03\x00", "empty"),
        (b"\x02#x\x03" + bytes([ord("#") ^ ord("x")]), "no_opcode"),
        (b"\x02\xff\x03\xff", "not_utf8"),
        (encode("OK") + encode("OK"), "multiple_frames"),
        (encode("OK") + b"\x00", "garbage"),
    ],
)
def test_decode_says_why_a_frame_is_bad(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as caught:
        decode(raw)
    assert caught.value.reason == reason


def test_empty_fields_survive() -> None:
    assert decode(encode("X", "", "")) == Frame("X", ("", ""))
    assert decode(b"\x02X#\x03" + bytes([ord("X") ^ ord("#")])) == Frame("X", ("",))


# --- corruption --------------------------------------------------------------------------------


@given(frames, st.data())
def test_any_single_byte_change_in_data_is_caught_by_the_lrc(
    frame: Frame, data: st.DataObject
) -> None:
    raw = bytearray(frame.to_bytes())
    index = data.draw(st.integers(1, len(raw) - 3), label="index in DATA")
    new = data.draw(
        st.integers(0, 255).filter(lambda b: b not in (raw[index], STX, ETX)), label="new byte"
    )
    raw[index] = new
    with pytest.raises(FrameError) as caught:
        decode(bytes(raw))
    assert caught.value.reason == "bad_lrc"
    assert outcome(FrameDecoder().feed(bytes(raw))) == ["bad_lrc"]


@given(frames, st.data())
def test_any_single_byte_change_anywhere_never_passes_silently(
    frame: Frame, data: st.DataObject
) -> None:
    """Even a change that alters the framing (a byte turned into STX/ETX) yields an error."""
    raw = bytearray(frame.to_bytes())
    index = data.draw(st.integers(0, len(raw) - 1), label="index")
    raw[index] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]), label="new")
    with pytest.raises(FrameError):
        decode(bytes(raw))
    decoder = FrameDecoder()
    results = decoder.feed(bytes(raw))
    assert decoder.in_frame or any(isinstance(r, FrameError) for r in results)


# --- incremental decoder -----------------------------------------------------------------------


def test_lrc_byte_may_equal_stx_or_etx() -> None:
    lrc_stx, lrc_etx = encode("AC"), encode("AB")  # 0x41^0x43 == STX, 0x41^0x42 == ETX
    assert (lrc_stx[-1], lrc_etx[-1]) == (STX, ETX)
    stream = lrc_stx + lrc_etx + lrc_stx
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        assert feed_in_chunks(decoder, stream, [cut]) == [Frame("AC"), Frame("AB"), Frame("AC")]


def test_garbage_run_is_reported_once_however_it_is_split() -> None:
    stream = b"hello world" + encode("OK")
    decoder = FrameDecoder()
    results = [r for byte in stream for r in decoder.feed(bytes([byte]))]
    assert outcome(results) == ["garbage", Frame("OK")]


def test_truncated_frame_is_dropped_at_the_next_stx() -> None:
    stream = b"\x02HB#CP0" + encode("HB", "CP01", "OK")
    assert outcome(FrameDecoder().feed(stream)) == ["truncated", Frame("HB", ("CP01", "OK"))]


def test_missing_lrc_before_next_frame_loses_only_the_broken_frame() -> None:
    stream = b"\x02HB\x03" + encode("OK")
    assert outcome(FrameDecoder().feed(stream)) == ["bad_lrc", Frame("OK")]


def test_frame_of_exactly_max_size_is_accepted() -> None:
    raw = encode("X", "y" * (MAX_FRAME_SIZE - 5))
    assert len(raw) == MAX_FRAME_SIZE
    assert outcome(FrameDecoder().feed(raw)) == [Frame("X", ("y" * (MAX_FRAME_SIZE - 5),))]


def test_oversize_frame_is_one_error_and_the_next_frame_survives() -> None:
    big = encode("X", "y" * MAX_FRAME_SIZE)
    decoder = FrameDecoder()
    assert feed_in_chunks(decoder, big + encode("OK"), [100, 1030]) == ["oversize", Frame("OK")]
    assert not decoder.in_frame


def test_unterminated_oversize_run_reports_once_then_resyncs() -> None:
    stream = b"\x02" + b"z" * 5000 + encode("OK")
    assert outcome(FrameDecoder(max_size=64).feed(stream)) == ["oversize", Frame("OK")]


def test_in_frame_tells_a_partial_frame() -> None:
    decoder = FrameDecoder()
    assert not decoder.in_frame
    decoder.feed(b"\x02HB")
    assert decoder.in_frame
    decoder.feed(b"\x03" + bytes([ord("H") ^ ord("B")]))
    assert not decoder.in_frame


@given(st.binary(max_size=400), st.data())
def test_feed_never_raises_and_chunking_does_not_change_the_result(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    whole = outcome(FrameDecoder(max_size=64).feed(stream))
    assert feed_in_chunks(FrameDecoder(max_size=64), stream, cuts) == whole


_no_stx = st.binary(max_size=40).map(lambda b: b.replace(b"\x02", b""))
_fragment = st.binary(max_size=2000).map(
    lambda b: b"\x02" + b.replace(b"\x02", b"").replace(b"\x03", b"")
)
garbage = st.one_of(_no_stx, _fragment)


@given(st.lists(st.tuples(garbage, frames), max_size=6), garbage, st.data())
def test_valid_frames_between_garbage_are_all_recovered(
    pieces: list[tuple[bytes, Frame]], tail: bytes, data: st.DataObject
) -> None:
    """Garbage: runs without STX, or frames cut short (STX + bytes, no ETX), of any length."""
    stream = b"".join(junk + frame.to_bytes() for junk, frame in pieces)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    results = feed_in_chunks(FrameDecoder(), stream, cuts)
    assert [r for r in results if isinstance(r, Frame)] == [frame for _, frame in pieces]
    assert sum(isinstance(r, str) for r in results) == sum(bool(junk) for junk, _ in pieces)
    # a trailing piece of garbage never raises and never invents a frame
    assert not [r for r in FrameDecoder().feed(tail) if isinstance(r, Frame)]
