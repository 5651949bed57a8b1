"""Live looping through a real bridge and server: `/continuo/capture` takes the last bars of the
audio input (JACK, fed by another program) or of a WAV file the DAW is still writing, and plays
their continuation in loop mode, on the clock's bars, until stopped."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import tone
from bridge_fixtures import BridgeProcess, Replies
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from jack_fixtures import jack_env
from server_fixtures import start_server

pytestmark = pytest.mark.timeout(240)
SOURCE = Path(__file__).with_name("capture_probe.py")  # `play`: a tone on a JACK output


def _ports(env: dict[str, str]) -> set[str]:
    return set(subprocess.run(["jack_lsp"], env=env, capture_output=True, text=True,
                              check=True).stdout.split())


def _wait_for_ports(env: dict[str, str], before: set[str], pattern: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        hits = sorted(p for p in _ports(env) - before if re.search(pattern, p))
        if hits:
            return hits[0]
        time.sleep(0.1)
    raise AssertionError(f"no new JACK port matching {pattern!r}: {_ports(env)}")


def test_capture_from_the_audio_input_loops_on_the_bars(
    model_dir: Path, tmp_path: Path, jack_server: str,
) -> None:
    env = jack_env(jack_server)
    server = start_server(model_dir, tmp_path / "server")
    replies = Replies()
    before = _ports(env)
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path / "bridge", "--input",
                           "--tempo", "120", "--quantize", "bar", env=env)
    source = None
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        bridge_in = _wait_for_ports(env, before, r":in_0$")
        before = _ports(env)
        source = subprocess.Popen([sys.executable, str(SOURCE), "play"], env=env,
                                  stdout=subprocess.PIPE, text=True)
        assert source.stdout.readline().strip() == "playing"
        subprocess.run(["jack_connect", _wait_for_ports(env, before, r"out_0$"), bridge_in],
                       env=env, check=True)
        time.sleep(2.0)  # the tone starts 1.5 s into the source's stream
        bridge.send("/continuo/capture", 1)  # the bar up to the next bar line
        job, _, beat = replies.wait_for("/continuo/playing", timeout_s=60)[0]
        chunks_then = len(replies.of("/continuo/chunk"))
        time.sleep(3.0)
        bridge.send("/continuo/stop")
        played = replies.wait_for("/continuo/played", timeout_s=30)[0]
    finally:
        if source is not None:
            source.wait(30)
        code = bridge.close()
        server.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    assert not replies.of("/continuo/error"), replies.of("/continuo/error")
    assert abs(beat - 4 * round(beat / 4)) < 2e-3 * 2  # on a bar line, within 1 ms at 120 BPM
    assert len(replies.of("/continuo/chunk")) > chunks_then  # it kept going: loop mode
    done = replies.of("/continuo/done")[0]
    assert done[:2] == [job, "stopped"]
    assert played[0] == job and played[1] >= 6 and played[2] == 0  # never late


def test_capture_from_a_file_the_daw_is_writing(model_dir: Path, tmp_path: Path) -> None:
    server = start_server(model_dir, tmp_path / "server")
    replies = Replies()
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path / "bridge", "--no-audio",
                           "--tempo", "100")
    recording = tmp_path / "take.wav"
    audio = tone(220.0, 3.0, 44_100).astype(np.float32)
    writer = sf.SoundFile(recording, "w", 44_100, 1, subtype="PCM_16")
    writer.write(audio)
    writer.flush()  # still open: the header does not count these frames yet
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        bridge.send("/continuo/capture", 1, str(tmp_path / "missing.wav"))
        bridge.send("/continuo/capture", 1, str(recording))  # 2.4 s at 100 BPM
        replies.wait_for("/continuo/chunk", count=6, timeout_s=60)
        bridge.send("/continuo/stop")
        done = replies.wait_for("/continuo/done", timeout_s=30)[0]
    finally:
        writer.close()
        code = bridge.close()
        server.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    errors = replies.of("/continuo/error")
    assert len(errors) == 1 and "missing.wav" in errors[0][0], errors
    assert done[1] == "stopped"
    sidecar = Path(done[2]).with_suffix(".json").read_text()
    assert '"loop": true' in sidecar
