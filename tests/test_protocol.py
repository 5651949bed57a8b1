"""The wire protocol alone (no server, no sockets): frames ⇄ requests, every parse error."""

from __future__ import annotations

import math
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuo.server.transport.protocol import (
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    ErrorCode,
    Generate,
    Heartbeat,
    Hello,
    Param,
    Presets,
    ProtocolError,
    Sequencer,
    Status,
    Stop,
    error_header,
    pack,
    parse_request,
    unpack_header,
)

MAX_PCM_BYTES = 4 * 1000


def _header(kind: str, **fields: object) -> dict:
    return {"v": PROTOCOL_VERSION, "type": kind, "seq": 7, **fields}


def _raw(header: object) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


# --- round trips --------------------------------------------------------------------------------

ROUND_TRIPS = [
    (Hello, {"client": "bridge 0.1"}, None),
    (Generate, {"clip": "bach/prelude.wav", "tempo": 93.7, "meter": "7/8", "bars": 100,
                "chunk_beats": 0.25, "preset": "piano", "params": {"temperature": 0.9,
                "top_k": 50.0}, "seed": 2**63 - 1, "loop": False, "track": "pad 3"}, None),
    (Generate, {"sr": 44100, "tempo": 120, "loop": True}, np.linspace(-1, 1, 300)),
    (Param, {"job": "j1", "params": {"top_p": 0.8, "variation": 0.3}, "preset": "realtime"},
     None),
    (Param, {"track": "main", "params": {"temperature": 1.2}}, None),
    (Stop, {"job": "j1"}, None),
    (Stop, {}, None),
    (Status, {}, None),
    (Presets, {}, None),
    (Heartbeat, {}, None),
]


@pytest.mark.parametrize(("model", "fields", "pcm"), ROUND_TRIPS,
                         ids=[f"{m.__name__}-{i}" for i, (m, _, _) in enumerate(ROUND_TRIPS)])
def test_request_round_trip(model: type, fields: dict, pcm: np.ndarray | None) -> None:
    header = Sequencer(seq=41).header(model.model_fields["type"].default, **fields)
    incoming = parse_request(pack(header, pcm), MAX_PCM_BYTES)
    request = incoming.request
    assert type(request) is model
    assert (request.v, request.seq) == (PROTOCOL_VERSION, 42)
    for name, value in fields.items():
        assert getattr(request, name) == value, name
    if pcm is None:
        assert incoming.pcm is None
    else:
        assert incoming.pcm.dtype == np.float32
        np.testing.assert_array_equal(incoming.pcm, pcm.astype(np.float32))


def test_generate_defaults() -> None:
    request = parse_request(pack(_header("generate", clip="a.wav", tempo=100.0, bars=2)),
                            MAX_PCM_BYTES).request
    assert (request.track, request.meter, request.chunk_beats, request.loop) == \
        ("main", "4/4", 1.0, False)
    assert (request.preset, request.seed, request.sr, request.params) == (None, None, None, {})


def test_sequencer_numbers_messages_and_error_header() -> None:
    seq = Sequencer()
    assert [seq.header("status")["seq"] for _ in range(3)] == [1, 2, 3]
    error = error_header(seq, ErrorCode.UNKNOWN_JOB, "no job j9", job="j9", re=12)
    assert error == {"v": PROTOCOL_VERSION, "type": "error", "seq": 4, "code": "unknown_job",
                     "message": "no job j9", "job": "j9", "re": 12}
    assert unpack_header(pack(error)[0]) == error


# --- errors -------------------------------------------------------------------------------------

PCM = np.zeros(4, np.float32).tobytes()
GEN = {"tempo": 120.0, "bars": 4}
ERRORS = {
    "garbage": ([b"\xc1\x00garbage"], ErrorCode.BAD_MESSAGE, "header is not msgpack"),
    "list": ([_raw([1, "hello"])], ErrorCode.BAD_MESSAGE, "must be a msgpack map, got list"),
    "no frames": ([], ErrorCode.BAD_MESSAGE, "1 or 2 frames, got 0"),
    "3 frames": ([_raw(_header("status")), b"", b""], ErrorCode.BAD_MESSAGE,
                 "1 or 2 frames, got 3"),
    "huge header": ([_raw(_header("hello", client="x" * MAX_HEADER_BYTES))],
                    ErrorCode.TOO_LARGE, f"(at most {MAX_HEADER_BYTES})"),
    "v 2": ([_raw({**_header("hello"), "v": 2})], ErrorCode.BAD_VERSION,
            "protocol version 2; this server speaks 1"),
    "no v": ([_raw({"type": "hello", "seq": 1})], ErrorCode.BAD_VERSION, "version None"),
    "unknown type": ([_raw(_header("dance"))], ErrorCode.UNKNOWN_TYPE,
                     "unknown request type 'dance'; known: hello, generate"),
    "list type": ([_raw(_header([1, 2]))], ErrorCode.UNKNOWN_TYPE, "unknown request type [1, 2]"),
    "bad field": ([_raw(_header("generate", clip="a.wav", tempo=-3.0, bars=4))],
                  ErrorCode.BAD_FIELD, "generate: tempo: Input should be greater than 0"),
    "infinite tempo": ([_raw(_header("generate", clip="a.wav", tempo=math.inf, bars=4))],
                       ErrorCode.BAD_FIELD, "generate: tempo: Input should be a finite number"),
    "string bars": ([_raw(_header("generate", clip="a.wav", tempo=120.0, bars="4"))],
                    ErrorCode.BAD_FIELD, "generate: bars: Input should be a valid integer"),
    "extra field": ([_raw(_header("status", job="j1"))], ErrorCode.BAD_FIELD,
                    "status: job: Extra inputs are not permitted"),
    "negative seq": ([_raw({**_header("hello"), "seq": -1})], ErrorCode.BAD_FIELD,
                     "hello: seq: Input should be greater than or equal to 0"),
    "oversized PCM": ([_raw(_header("generate", sr=8000, **GEN)), b"\0" * (MAX_PCM_BYTES + 4)],
                      ErrorCode.TOO_LARGE, f"PCM frame of {MAX_PCM_BYTES + 4} bytes (at most "
                      f"{MAX_PCM_BYTES})"),
    "PCM of 5 bytes": ([_raw(_header("generate", sr=8000, **GEN)), b"\0" * 5],
                       ErrorCode.BAD_MESSAGE, "PCM frame of 5 bytes is not whole float32"),
    "NaN PCM": ([_raw(_header("generate", sr=8000, **GEN)),
                 np.array([0.0, np.nan], "<f4").tobytes()], ErrorCode.BAD_MESSAGE,
                "PCM frame holds NaN or infinite samples"),
    "PCM on status": ([_raw(_header("status")), PCM], ErrorCode.BAD_MESSAGE,
                      "status takes no PCM frame"),
    "clip and PCM": ([_raw(_header("generate", clip="a.wav", sr=8000, **GEN)), PCM],
                     ErrorCode.BAD_FIELD, "exactly one prompt: a clip path or a PCM frame"),
    "no prompt": ([_raw(_header("generate", **GEN))], ErrorCode.BAD_FIELD,
                  "exactly one prompt: a clip path or a PCM frame"),
    "PCM without sr": ([_raw(_header("generate", **GEN)), PCM], ErrorCode.BAD_FIELD,
                       "generate with a PCM frame needs its sr"),
    "no bars, no loop": ([_raw(_header("generate", clip="a.wav", tempo=120.0))],
                         ErrorCode.BAD_FIELD, "generate needs bars (or loop: true)"),
    "unknown param": ([_raw(_header("param", job="j1", params={"warmth": 1.0}))],
                      ErrorCode.BAD_FIELD, "unknown parameter(s) warmth; known: temperature"),
    "non-finite param": ([_raw(_header("generate", clip="a.wav", params={"top_p": math.nan},
                                       **GEN))],
                         ErrorCode.BAD_FIELD, "parameter(s) top_p must be finite"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_parse_errors(case: str) -> None:
    frames, code, message = ERRORS[case]
    with pytest.raises(ProtocolError) as caught:
        parse_request(frames, MAX_PCM_BYTES)
    assert caught.value.code is code
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{code.value}: ")


def test_errors_carry_the_request_seq_and_job() -> None:
    frames = [_raw({**_header("param", job="j4", params={"warmth": 1.0}), "seq": 99})]
    with pytest.raises(ProtocolError) as caught:
        parse_request(frames, MAX_PCM_BYTES)
    assert (caught.value.seq, caught.value.job) == (99, "j4")
    with pytest.raises(ProtocolError) as caught:  # a boolean is not a seq
        parse_request([_raw({**_header("dance"), "seq": True})], MAX_PCM_BYTES)
    assert caught.value.seq is None
    with pytest.raises(ProtocolError) as caught:
        parse_request([_raw(_header("generate", sr=8000, **GEN)), b"\0" * 5], MAX_PCM_BYTES)
    assert caught.value.seq == 7


# --- fuzzing ------------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.binary(max_size=12)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_keys = st.sampled_from(["v", "type", "seq", "job", "track", "clip", "sr", "tempo", "meter",
                         "bars", "chunk_beats", "preset", "params", "seed", "loop", "client"])
_headers = st.fixed_dictionaries(
    {"v": st.just(PROTOCOL_VERSION) | _scalars, "type": st.sampled_from(REQUEST_TYPES) | _values},
    optional={"seq": st.integers(-5, 2**64 - 1) | _scalars},
).flatmap(lambda base: st.dictionaries(_keys, _values, max_size=6).map(
    lambda extra: {**extra, **base}))
_pcm = st.binary(max_size=64) | st.lists(st.floats(width=32), max_size=16).map(
    lambda xs: np.array(xs, "<f4").tobytes())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=3))
def test_arbitrary_bytes_only_raise_protocol_errors(frames: list[bytes]) -> None:
    try:
        parse_request(frames, MAX_PCM_BYTES)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode) and err.message


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_headers, st.lists(_pcm, max_size=2))
def test_arbitrary_headers_only_raise_protocol_errors(header: dict, rest: list[bytes]) -> None:
    try:
        incoming = parse_request([_raw(header), *rest], MAX_PCM_BYTES)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode) and err.message
    else:
        assert incoming.request.type == header["type"]
        assert (incoming.pcm is not None) == (len(rest) == 1)


def test_protocol_imports_without_torch() -> None:
    code = ("import sys, continuo.server.transport.protocol; "
            "assert 'torch' not in sys.modules, 'protocol imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
