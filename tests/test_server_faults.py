"""The server under bad input and bad clients: every fault gets an error reply naming it (when
someone is there to reply to), other jobs go on, recordings stay complete, SIGTERM is clean."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from server_fixtures import (  # noqa: F401 (fixture)
    SR,
    ServerProcess,
    collect,
    joined,
    server,
    start_server,
    wait_for,
)

from continuo.bridge.client import ServerError
from continuo.server.musical_time import Meter, bar_to_sample
from continuo.server.transport.protocol import PEER_TIMEOUT_S

pytestmark = pytest.mark.timeout(300)


def _header(**fields: object) -> bytes:
    return msgpack.packb({"v": 1, "seq": 1, **fields})


def test_every_bad_request_gets_its_error_while_a_job_streams_on(
    server: ServerProcess,  # noqa: F811
) -> None:
    (server.root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 10)
    (server.root / "empty.wav").write_bytes(b"")
    (server.root.parent / "outside.wav").write_bytes(b"")
    with server.client() as runner, server.client() as bad:
        job = runner.generate(clip="prompt.wav", tempo=120, bars=8, chunk_beats=1)["job"]
        raw = [
            ([msgpack.packb([1, 2, 3])], "bad_message", "msgpack map"),
            ([b"\xc1\xc1\xc1garbage"], "bad_message", "not msgpack"),
            ([_header(type="hello", v=2)], "bad_version", "protocol version 2"),
            ([_header(type="dance")], "unknown_type", "unknown request type 'dance'"),
            ([_header(type="generate", clip="prompt.wav", tempo="fast", bars=1)], "bad_field",
             "tempo"),
            ([_header(type="generate", tempo=120, bars=1, sr=SR),
              b"\x00" * (3 * 4 * SR * 4 + 4)], "too_large", "PCM frame"),
            ([_header(type="generate", tempo=120, bars=1, sr=SR), b"\x00" * 5], "bad_message",
             "whole float32"),
            ([_header(type="status"), b"x", b"y"], "bad_message", "1 or 2 frames"),
        ]
        for frames, code, words in raw:
            bad.send_raw(frames)
            error = _next_error(bad)
            assert error["code"] == code and words in error["message"], (code, error)
        requests = [
            ({"preset": "no-such-preset"}, "unknown_preset", "no-such-preset"),
            ({"preset": "/etc/passwd"}, "unknown_preset", "not by path"),  # never read
            ({"preset": "../pyproject.toml"}, "unknown_preset", "not by path"),
            ({"clip": "missing.wav"}, "bad_clip", "missing.wav"),
            ({"clip": "../outside.wav"}, "bad_clip", "outside the clip root"),
            ({"clip": "corrupt.wav"}, "bad_clip", "corrupt.wav"),
            ({"clip": "empty.wav"}, "bad_clip", "empty.wav"),
            ({"tempo": 0.5}, "bad_field", "tempo"),
            ({"bars": 10**9}, "limit", "limit"),
            ({"params": {"warmth": 1.0}}, "bad_field", "warmth"),
            ({"params": {"temperature": 50.0}}, "bad_field", "temperature"),
            ({"clip": None, "pcm": np.zeros(4 * SR, np.float32), "sr": SR}, "limit", "3 s"),
            ({"clip": None, "pcm": np.full(SR, np.nan, np.float32), "sr": SR}, "bad_message",
             "NaN"),
            ({"clip": None, "pcm": np.zeros(SR, np.float32), "sr": SR}, "bad_clip", "silent"),
        ]
        for change, code, words in requests:
            args = {"clip": "prompt.wav", "tempo": 120, "bars": 2, **change}
            with pytest.raises(ServerError) as caught:
                bad.generate(**args)
            assert caught.value.code.value == code and words in caught.value.message, (
                change, caught.value)
        with pytest.raises(ServerError, match=r"unknown_job|no running"):
            bad.param(job="j999", params={"temperature": 0.5})
        chunks, done = collect(runner, job)
        # and the server still takes good work from the client that sent all that
        again = bad.generate(pcm=np.asarray(chunks[0].pcm), sr=SR, tempo=120, bars=1)
        _, again_done = collect(bad, again["job"])
    assert done["reason"] == "finished" and len(chunks) == 32
    assert again_done["reason"] == "finished"


def _next_error(client) -> dict:
    while True:
        event = client.recv(10)
        assert event is not None, "no error reply within 10 s"
        if event.kind == "error":
            return event.header


def test_a_vanished_client_s_jobs_are_recorded_whole_and_its_loop_ends(
    server: ServerProcess,  # noqa: F811
) -> None:
    client = server.client()
    finite = client.generate(clip="prompt.wav", tempo=120, bars=6, chunk_beats=1)
    loop = client.generate(clip="prompt.wav", tempo=120, chunk_beats=1, loop=True, track="b")
    client.close()  # gone without a word, mid-stream
    sidecars = {name: Path(a["recording"]).with_suffix(".json") for name, a in
                (("finite", finite), ("loop", loop))}

    def ended(name: str) -> dict | None:
        meta = json.loads(sidecars[name].read_text())
        return meta if "reason" in meta else None

    wait_for(lambda: ended("finite"), 60, "the finite job's recording to close")
    meta = ended("finite")
    total = bar_to_sample(6, 120, Meter(4, 4), SR)
    assert meta["reason"] == "finished" and meta["samples"] == total
    audio = __import__("soundfile").read(finite["recording"], dtype="float32")[0]
    assert len(audio) == total
    wait_for(lambda: ended("loop"), PEER_TIMEOUT_S + 10, "the loop job to end")
    assert ended("loop")["reason"] == "client_gone"


def test_sigterm_ends_jobs_tells_clients_and_exits_cleanly(
    model_dir: Path, tmp_path: Path,
) -> None:
    proc = start_server(model_dir, tmp_path / "serve")
    with proc.client() as client:
        job = client.generate(clip="prompt.wav", tempo=120, chunk_beats=1, loop=True)["job"]
        stream = client.stream(job)
        first = next(stream)
        assert proc.stop(signal.SIGTERM) == 0
        rest = list(stream)
        errors = []
        while (event := client.recv(2)) is not None:
            errors.append(event.header)
    done = rest[-1].header
    assert done["reason"] == "shutdown"
    assert any(e.get("code") == "shutdown" for e in errors if e["type"] == "error")
    chunks = [first, *rest[:-1]]
    meta = json.loads(Path(done["sidecar"]).read_text())
    assert meta["reason"] == "shutdown" and meta["samples"] == len(joined(chunks))
    assert "stopped" in proc.log_text()


def test_binding_beyond_loopback_without_keys_is_refused_before_loading(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "continuo.server.cli", "serve", "--bind",
                             "tcp://0.0.0.0:5599"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "needs CURVE keys" in result.stderr and "continuo keys" in result.stderr
    assert time.monotonic() - started < 30
