"""atheris target: the server's decoding of one request (`protocol.parse_request`).

Half the inputs are raw frames (the bytes split into 1-3 frames); the other half build a
msgpack map from the bytes (known field names, values of every msgpack type, nested) with an
optional PCM frame, so the fuzzer reaches the field validation. Only `ProtocolError` may come
out; a request that parses must parse again, equal, after packing it back.

    .venv/bin/python fuzz/fuzz_protocol.py CORPUS_DIR -max_total_time=60   (or: make fuzz)
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import msgpack

    from continuo.server.transport.protocol import ProtocolError, pack, parse_request

MAX_PCM_BYTES = 4 * 4096
FIELDS = ["v", "type", "seq", "job", "track", "clip", "sr", "tempo", "meter", "bars",
          "chunk_beats", "preset", "params", "seed", "loop", "client", "temperature", "top_k",
          "top_p", "variation"]
TYPES = ["hello", "generate", "param", "stop", "status", "presets", "heartbeat", "chunk"]
VALID = {"generate": {"clip": "a.wav", "tempo": 120.0, "bars": 4, "meter": "7/8",
                     "params": {"temperature": 0.9}},
         "param": {"job": "j1", "params": {"top_p": 0.5}}, "stop": {"track": "main"}}


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-2**63, 2**64 - 1)
    if kind == 3:
        return fdp.ConsumeIntInRange(-3, 300)
    if kind == 4:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 6:
        return fdp.PickValueInList(TYPES + FIELDS)
    if kind == 7:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if kind == 8:
        return msgpack.ExtType(fdp.ConsumeIntInRange(0, 127), fdp.ConsumeBytes(8))
    if kind in (9, 10):
        return {_key(fdp): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}
    return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def _key(fdp: atheris.FuzzedDataProvider) -> str | bytes:
    if fdp.ConsumeIntInRange(0, 7):
        return fdp.PickValueInList(FIELDS)
    return fdp.ConsumeBytes(4) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(6)


def _frames(data: bytes) -> list[bytes]:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():  # raw frames
        sizes = [fdp.ConsumeIntInRange(0, len(data)) for _ in range(fdp.ConsumeIntInRange(0, 2))]
        frames = [fdp.ConsumeBytes(size) for size in sizes]
        return [*frames, fdp.ConsumeBytes(len(data))]
    header: dict = {}
    if fdp.ConsumeIntInRange(0, 7):
        kind = fdp.PickValueInList(TYPES)
        header = {"v": 1 if fdp.ConsumeIntInRange(0, 7) else _value(fdp), "type": kind,
                  "seq": fdp.ConsumeIntInRange(-1, 2**40)}
        if fdp.ConsumeBool():  # start from a valid request, then change some fields
            header.update(VALID.get(kind, {}))
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        header[_key(fdp)] = _value(fdp)
    frames = [msgpack.packb(header, use_bin_type=True)]
    if fdp.ConsumeBool():
        frames.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, MAX_PCM_BYTES + 8)))
    return frames


def test_one_input(data: bytes) -> None:
    frames = _frames(data)
    try:
        incoming = parse_request(frames, MAX_PCM_BYTES)
    except ProtocolError as err:
        assert err.message and err.code.value, err
        return
    again = parse_request(pack(incoming.request.model_dump(), incoming.pcm), MAX_PCM_BYTES)
    assert again.request == incoming.request, (again.request, incoming.request)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
