"""Property tests (hypothesis) on everything that parses outside input: the wire protocol's
decoder, the OSC inbox and handlers, the preset loader and audio loading. Each takes anything
and either returns a valid value or raises the project's own error naming what was wrong.
Every crash the fuzzers found (here or in `make fuzz`) is a regression test at the end."""

from __future__ import annotations

import io
import math
import random
import socket
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import soundfile as sf
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from continuo.bridge import osc
from continuo.bridge.inbox import OscInbox, parse_datagram
from continuo.server.audio import load_audio
from continuo.server.errors import AudioError, ConfigError
from continuo.server.presets import Preset, load_preset
from continuo.server.transport.protocol import (
    PARAM_NAMES,
    PROTOCOL_VERSION,
    ErrorCode,
    ProtocolError,
    Sequencer,
    pack,
    parse_request,
)

MAX_PCM_BYTES = 4 * 2000
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _only_protocol_errors(frames: list[bytes]):
    try:
        return parse_request(frames, MAX_PCM_BYTES)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode) and err.message
        assert err.seq is None or type(err.seq) is int
        return None


# --- protocol: valid requests round-trip --------------------------------------------------------

_text = st.text(min_size=1, max_size=30)
_positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
_params = st.dictionaries(st.sampled_from(PARAM_NAMES),
                          st.floats(allow_nan=False, allow_infinity=False), max_size=4)
_generate = st.fixed_dictionaries(
    {"tempo": _positive, "clip": _text},
    optional={"track": _text, "meter": st.text(max_size=10), "bars": st.integers(1, 2**40),
              "chunk_beats": _positive, "preset": _text, "params": _params,
              "seed": st.integers(0, 2**63 - 1), "loop": st.just(True)},
).filter(lambda f: "bars" in f or f.get("loop"))
_requests = st.one_of(
    st.tuples(st.just("hello"), st.fixed_dictionaries({}, optional={"client": st.text(
        max_size=200)})),
    st.tuples(st.just("generate"), _generate),
    st.tuples(st.just("param"), st.fixed_dictionaries({}, optional={
        "job": _text, "track": _text, "params": _params, "preset": _text})),
    st.tuples(st.just("stop"), st.fixed_dictionaries({}, optional={"job": _text,
                                                                    "track": _text})),
    st.tuples(st.sampled_from(["status", "presets", "heartbeat"]), st.just({})),
)


@FAST
@given(_requests, st.integers(0, 2**63), st.booleans(),
       st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1,
                max_size=64))
def test_valid_requests_round_trip(request: tuple[str, dict], seq: int, as_pcm: bool,
                                   samples: list[float]) -> None:
    kind, fields = request
    pcm = None
    if kind == "generate" and as_pcm:  # the same request with a PCM prompt instead of a clip
        fields = {**{k: v for k, v in fields.items() if k != "clip"}, "sr": 44100}
        pcm = np.array(samples, np.float32)
    header = Sequencer(seq=seq).header(kind, **fields)
    incoming = parse_request(pack(header, pcm), MAX_PCM_BYTES)
    assert incoming.request.type == kind and incoming.request.seq == seq + 1
    assert incoming.request.model_dump() | header == incoming.request.model_dump()
    if pcm is None:
        assert incoming.pcm is None
    else:
        np.testing.assert_array_equal(incoming.pcm, pcm)


# --- protocol: any msgpack, mutated frames ------------------------------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
            | st.text(max_size=8) | st.binary(max_size=8)
            | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
            | st.builds(msgpack.Timestamp, st.integers(-2**33, 2**33), st.integers(0, 999_999_999)))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=6) | st.binary(max_size=4), inner,
                                         max_size=3), max_leaves=10)
_field_names = st.sampled_from(["v", "type", "seq", "job", "track", "clip", "sr", "tempo",
                                "meter", "bars", "chunk_beats", "preset", "params", "seed",
                                "loop", "client", "re", "code"])


@FAST
@given(st.dictionaries(_field_names, _values, max_size=8),
       st.sampled_from(["hello", "generate", "param", "stop", "status"]),
       st.lists(st.binary(max_size=40), max_size=2))
def test_any_msgpack_map_is_a_request_or_a_protocol_error(fields: dict, kind: str,
                                                          rest: list[bytes]) -> None:
    header = {"v": PROTOCOL_VERSION, "type": kind, "seq": 3, **fields}
    try:
        incoming = parse_request([msgpack.packb(header, use_bin_type=True), *rest],
                                 MAX_PCM_BYTES)
    except ProtocolError as err:
        assert isinstance(err.code, ErrorCode) and err.message
        if type(header["seq"]) is int:  # the sender can tell which request failed
            assert err.seq == header["seq"]
    else:
        assert incoming.request.type == header["type"]


@FAST
@given(_requests, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                                     st.sampled_from(["set", "insert", "delete"])),
                           min_size=1, max_size=6))
def test_mutated_requests_only_raise_protocol_errors(request: tuple[str, dict],
                                                     edits: list[tuple[int, int, str]]) -> None:
    kind, fields = request
    raw = bytearray(pack(Sequencer().header(kind, **fields))[0])
    for position, byte, op in edits:
        at = position % (len(raw) + 1)
        if op == "insert":
            raw.insert(at, byte)
        elif raw and op == "set":
            raw[at % len(raw)] = byte
        elif raw:
            del raw[at % len(raw)]
    _only_protocol_errors([bytes(raw)])


@FAST
@given(st.integers(1, 3000), st.sampled_from([b"\x91", b"\x81\xa1v", b"\xdd\xff\xff\xff\xff"]))
def test_deep_or_lying_msgpack_is_a_protocol_error(depth: int, opener: bytes) -> None:
    _only_protocol_errors([opener * depth + b"\xc0"])


# --- OSC: inbox and handlers --------------------------------------------------------------------

_addresses = st.sampled_from([osc.PREFIX + n for n in osc.SIGNATURES]) | st.text(
    max_size=20).map(lambda s: "/" + s.replace("\0", ""))
_osc_args = st.one_of(
    st.tuples(st.just("i"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("h"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("f"), st.floats(width=32)),
    st.tuples(st.just("d"), st.floats()),
    st.tuples(st.just("s"), st.text(max_size=20).map(lambda s: s.replace("\0", ""))),
    st.tuples(st.just("b"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("r"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("m"), st.tuples(*[st.integers(0, 255)] * 4)),
    st.tuples(st.sampled_from(["T", "F", "N"]), st.none()),
)


def _osc_message(address: str, args: list[tuple[str, object]]) -> bytes:
    builder = OscMessageBuilder(address)
    for kind, value in args:
        builder.add_arg({"T": True, "F": False}.get(kind, value), kind)
    return builder.build().dgram


def _handled(data: bytes) -> list[tuple[str | None, object]]:
    """What the bridge does with a datagram: inbox parse, then the handler; OscError only."""
    parsed = parse_datagram(data)
    for address, args in parsed:
        if address is None:
            assert isinstance(args, str) and "not an OSC packet" in args
            continue
        try:
            osc.parse_message(address, args)
        except osc.OscError as err:
            assert str(err)
    return parsed


@FAST
@given(_addresses, st.lists(_osc_args, max_size=6))
def test_any_osc_message_is_parsed_then_handled(address: str, args: list) -> None:
    parsed = _handled(_osc_message(address, args))
    assert len(parsed) == 1 and parsed[0][0] == address


@FAST
@given(st.lists(st.tuples(_addresses, st.lists(_osc_args, max_size=3)), max_size=4))
def test_osc_bundles_yield_their_messages_in_order(messages: list) -> None:
    bundle = OscBundleBuilder(IMMEDIATELY)
    for address, args in messages:
        builder = OscMessageBuilder(address)
        for kind, value in args:
            builder.add_arg({"T": True, "F": False}.get(kind, value), kind)
        bundle.add_content(builder.build())
    parsed = _handled(bundle.build().dgram)
    assert [a for a, _ in parsed] == [a for a, _ in messages]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200) | st.builds(
    lambda address, args, cut, noise: _osc_message(address, args)[:cut] + noise,
    _addresses, st.lists(_osc_args, max_size=4), st.integers(0, 200), st.binary(max_size=8)))
def test_any_datagram_is_messages_or_a_queued_error(data: bytes) -> None:
    for address, args in _handled(data):
        assert isinstance(address, str) or isinstance(args, str)


def test_a_real_inbox_queues_every_fuzzed_datagram_and_keeps_reading() -> None:
    rng = random.Random(8)
    inbox = OscInbox("127.0.0.1", 0)
    inbox.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for i in range(200):
                good = _osc_message(rng.choice(list(osc.SIGNATURES)).join(["/continuo/", ""]),
                                    [("f", rng.uniform(-1e3, 1e3))] * rng.randint(0, 3))
                data = rng.randbytes(rng.randint(0, 300)) if i % 2 else \
                    good[: rng.randint(0, len(good))] + rng.randbytes(rng.randint(0, 4))
                sender.sendto(data, ("127.0.0.1", inbox.port))
                address, args, _, _ = inbox.messages.get(timeout=5)
                assert address is not None or "not an OSC packet" in args
                while not inbox.messages.empty():  # a datagram may hold several messages
                    inbox.messages.get_nowait()
        assert inbox._thread.is_alive()
    finally:
        inbox.close()


# --- presets ------------------------------------------------------------------------------------

_toml_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | _toml_text
                 | st.datetimes() | st.dates() | st.times())
_toml_values = st.recursive(_toml_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(_toml_text.filter(bool), inner,
                                              max_size=3), max_leaves=8)
_preset_keys = st.sampled_from(["model_dir", "bandwidth_kbps", "context_s", "seed", "precision",
                                "notes", "semantic", "coarse", "fine", "semantic.temperature",
                                "coarse.top_k", "fine.top_p", "stages"])
VALID_PRESET = {"model_dir": "models/piano", "bandwidth_kbps": 6.0, "context_s": 4.0,
                "semantic": {"temperature": 0.8, "top_k": 50}, "fine": {"top_p": 0.9}}


def _write(folder: Path, text: str | bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=folder)) / "fuzzed.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def _preset_or_config_error(path: Path) -> Preset | ConfigError:
    try:
        return load_preset(path)
    except ConfigError as err:
        assert str(path) in str(err), err
        return err


@FAST
@given(_preset_keys, _toml_values)
def test_a_preset_with_any_value_loads_or_names_the_key(tmp_path: Path, key: str,
                                                        value: object) -> None:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID_PRESET.items()}
    table, _, name = key.rpartition(".")
    (data.setdefault(table, {}) if table else data)[name] = value
    result = _preset_or_config_error(_write(tmp_path, tomli_w.dumps(data)))
    if isinstance(result, ConfigError):
        assert name in str(result), result
    else:
        assert result.name == "fuzzed"


@FAST
@given(st.text(max_size=200) | st.binary(max_size=200).map(bytes))
def test_any_preset_file_loads_or_raises_config_error(tmp_path: Path, text: str | bytes) -> None:
    _preset_or_config_error(_write(tmp_path, text))


# --- audio loading ------------------------------------------------------------------------------

_FORMATS = [("wav", "PCM_16"), ("wav", "FLOAT"), ("wav", "PCM_24"), ("flac", "PCM_16"),
            ("ogg", "VORBIS")]


def _real_file(suffix: str, subtype: str) -> bytes:
    t = np.arange(4800) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone, tone[::-1]], axis=1), 16000, subtype=subtype,
             format=suffix.upper())
    return buf.getvalue()


REAL_FILES = {f"{s}-{t}": (s, _real_file(s, t)) for s, t in _FORMATS}


def _audio_or_audio_error(folder: Path, suffix: str, data: bytes) -> None:
    path = Path(tempfile.mkdtemp(dir=folder)) / f"clip.{suffix}"
    path.write_bytes(data)
    try:
        audio = load_audio(path, sample_rate=8000, max_seconds=5.0)
    except AudioError as err:
        assert str(err).startswith(str(path)), err
    else:
        assert audio.samples.shape[0] == 1 and audio.n_samples > 0
        assert np.isfinite(audio.samples).all()


@FAST
@given(st.sampled_from(["wav", "flac", "ogg", "oga", "mp3", "txt"]), st.binary(max_size=300))
def test_random_bytes_are_an_audio_error_naming_the_file(tmp_path: Path, suffix: str,
                                                         data: bytes) -> None:
    _audio_or_audio_error(tmp_path, suffix, data)


@FAST
@given(st.sampled_from(sorted(REAL_FILES)), st.floats(0, 1),
       st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4))
def test_truncated_or_corrupted_real_files_load_or_name_the_file(
    tmp_path: Path, name: str, keep: float, edits: list[tuple[int, int]],
) -> None:
    suffix, data = REAL_FILES[name]
    raw = bytearray(data[: max(1, math.floor(len(data) * keep))])
    for position, byte in edits:  # mostly in the header: sizes, rates, channel counts
        raw[position % len(raw)] = byte
    assume(len(raw) > 0)
    _audio_or_audio_error(tmp_path, suffix, bytes(raw))


# --- regression tests: crashes the fuzzers found ------------------------------------------------


def test_a_deeply_nested_toml_preset_is_a_config_error(tmp_path: Path) -> None:
    """Found by hand while writing the preset properties: tomllib recurses per nesting level and
    raised RecursionError out of load_preset."""
    for text in ("notes = " + "[" * 1200 + "]" * 1200, "x = " + "{a = " * 1200 + "1" + "}" * 1200):
        path = _write(tmp_path, text)
        with pytest.raises(ConfigError, match="nested too deeply") as caught:
            load_preset(path)
        assert str(path) in str(caught.value)


# Found by `make fuzz` (fuzz/fuzz_osc.py, 5 s in): python-osc's bundle parser walks back on an
# element of negative size (0xfffffff9 = -7 after a -1) and never returns; the bridge's inbox
# thread would spin forever, logging a warning per turn.
NEGATIVE_BUNDLE_ELEMENT = (b"#bundle\0" + b"\xff" * 11 + b"\xf9" + b"\xff" * 81
                           + b"ntinuo/0status\0\0\0\0,\0\0\0")


@pytest.mark.timeout(20)
def test_a_bundle_element_of_negative_size_is_refused_at_once() -> None:
    assert len(NEGATIVE_BUNDLE_ELEMENT) == 123
    started = time.perf_counter()
    [(address, message)] = parse_datagram(NEGATIVE_BUNDLE_ELEMENT)
    assert address is None and "size -7 does not fit" in message
    assert time.perf_counter() - started < 0.1


def _bundle(*elements: bytes) -> bytes:
    return b"#bundle\0" + b"\0" * 7 + b"\1" + b"".join(
        len(e).to_bytes(4, "big") + e for e in elements)


def test_bundles_nested_deeper_than_python_recursion_are_refused() -> None:
    """Found by reading python-osc after the crash above: one OscBundle per nesting level, so a
    64 KB datagram of 3,000 nested bundles raised RecursionError, which the inbox did not catch
    (its thread died)."""
    message = _osc_message("/continuo/status", [])
    nested = message
    for _ in range(3000):
        nested = _bundle(nested)
    assert len(nested) < 65_507  # fits in one UDP datagram
    [(address, problem)] = parse_datagram(nested)
    assert address is None and "nested deeper than 8" in problem
    for depth in (1, 8):  # what Max, Pd and DAWs send: shallow bundles
        nested = message
        for _ in range(depth):
            nested = _bundle(nested, message)
        assert [a for a, _ in parse_datagram(nested)] == ["/continuo/status"] * (depth + 1)


def test_bundle_elements_that_are_not_osc_are_reported_not_skipped() -> None:
    message = _osc_message("/continuo/stop", [])
    for bad in (_bundle(message, b""), _bundle(message, b"junk"), _bundle(message)[:-2]):
        [(address, problem)] = parse_datagram(bad)
        assert address is None and "bundle element" in problem, problem


def test_an_error_for_too_many_frames_names_the_request() -> None:
    """Found by test_any_msgpack_map_is_a_request_or_a_protocol_error: a message of 3 frames got
    an error without the request's seq, so a client waiting for its reply timed out instead."""
    header = msgpack.packb({"v": 1, "type": "param", "seq": 9, "job": "j2"})
    with pytest.raises(ProtocolError, match="1 or 2 frames, got 3") as caught:
        parse_request([header, b"", b""], MAX_PCM_BYTES)
    assert (caught.value.seq, caught.value.job) == (9, "j2")


def test_a_wav_claiming_16_mhz_or_a_sample_too_short_to_resample_is_an_audio_error(
    tmp_path: Path,
) -> None:
    """Found by test_truncated_or_corrupted_real_files_load_or_name_the_file: a float WAV whose
    rate field's top byte was set (16,000 → 16,793,216 Hz), cut to 1/8, loaded as an Audio of
    zero samples at 8 kHz instead of raising."""
    data = bytearray(REAL_FILES["wav-FLOAT"][1])
    data[27] = 1  # the sample rate's most significant byte
    data = data[: len(data) // 8]
    path = tmp_path / "clip.wav"
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"invalid sample rate 16793216 Hz") as caught:
        load_audio(path, sample_rate=8000)
    assert str(caught.value).startswith(str(path))
    one = tmp_path / "one.wav"
    sf.write(one, np.full(1, 0.5, np.float32), 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="1 samples at 48000 Hz are none at 8000 Hz"):
        load_audio(one, sample_rate=8000)
