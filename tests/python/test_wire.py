"""FAULTS row 23 from Python: the message decoder (``_core.loads``, what a
worker and the parent run on every message) given truncated, corrupted or
arbitrary bytes raises a clear error or returns a value; it never crashes
(the ASan run of this suite would report a bad read). The ring and the frame
parsers underneath are fuzzed with libFuzzer in tests/fuzz."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkfarm import _core

pytestmark = pytest.mark.timeout(120)

# A frame's header: magic, reference count, pin count, zero.
FRAME_MAGIC = b"\xffFFB"
COMPACT_MAGIC_LENGTH = 4

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _array(n: int) -> np.ndarray:
    # Past the 64 KiB threshold: it travels out of band, through the arena.
    return np.arange(n, dtype=np.float64)


def _decode(data: bytes) -> Any:
    """Decodes, and accepts either a value or a clean exception."""
    try:
        return _core.loads(data)
    except Exception as exc:  # noqa: BLE001 - any clean error is the point
        # A length read from garbage may ask for more memory than there is.
        assert str(exc) or isinstance(exc, (pickle.UnpicklingError, EOFError, MemoryError)), repr(exc)
        return exc


@SETTINGS
@given(plain_values)
def test_round_trip(value: Any) -> None:
    assert _core.loads(_core.dumps(value)) == value


@SETTINGS
@given(st.integers(min_value=8192, max_value=40_000), st.integers(min_value=0, max_value=2))
def test_round_trip_out_of_band(n: int, extra: int) -> None:
    value = [_array(n + i) for i in range(extra + 1)]
    data = _core.dumps(value)
    assert data.startswith(FRAME_MAGIC)
    back = _core.loads(data)
    for sent, got in zip(value, back, strict=True):
        np.testing.assert_array_equal(sent, got)


@SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode(data)


@SETTINGS
@given(st.binary(max_size=256), st.sampled_from([FRAME_MAGIC, b"\xffFFC"]))
def test_arbitrary_bytes_behind_a_magic(tail: bytes, magic: bytes) -> None:
    _decode(magic + tail)


@SETTINGS
@given(st.data())
def test_truncated_frame(data: st.DataObject) -> None:
    message = _core.dumps([_array(10_000), "tail"])
    cut = data.draw(st.integers(min_value=0, max_value=len(message) - 1))
    outcome = _decode(message[:cut])
    assert isinstance(outcome, Exception), "a truncated frame must not decode"


@SETTINGS
@given(st.data())
def test_corrupted_frame(data: st.DataObject) -> None:
    message = bytearray(_core.dumps([_array(10_000), _array(9_000)]))
    # Only the frame's header and its two references, where a changed byte
    # could point a view outside a chunk; the pickle behind them is left
    # alone (pickle has no checksum: a changed pickle may load as anything).
    span = 16 + 2 * 32
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=4, max_value=span - 1))
        message[at] = data.draw(st.integers(min_value=0, max_value=255))
    outcome = _decode(bytes(message))
    if not isinstance(outcome, Exception):
        # A change the decoder accepts (a reference moved within its chunk,
        # say) still yields the two arrays the pickle names.
        assert isinstance(outcome, list) and len(outcome) == 2
        assert all(isinstance(a, np.ndarray) for a in outcome)


def test_compact_results_are_checked() -> None:
    # A map chunk's result of plain ints travels compact: 16 bytes of header
    # and 8 per item.
    good = _core.encode_singletons([7], pickle.dumps, 5)[0]
    assert _core.loads(good) == [7]
    for cut in range(COMPACT_MAGIC_LENGTH, len(good)):
        assert isinstance(_decode(good[:cut]), Exception)
    lying = bytearray(good)
    lying[8] = 200  # claims 200 items in 8 bytes
    with pytest.raises(ValueError, match="corrupt compact"):
        _core.loads(bytes(lying))


def test_a_frame_decoded_twice_reads_the_same_bytes() -> None:
    # Receivers do not claim references in shared memory (a sender never
    # trusts what they write there): decoding again is harmless, and what
    # frees the bytes is the sender's own record of who holds them
    # (tests/c/test_arena.c).
    array = _array(10_000)
    message = _core.dumps([array])
    first = _core.loads(message)
    second = _core.loads(message)
    assert first[0].tobytes() == second[0].tobytes() == array.tobytes()
