"""Faults under a real bridge (issue 8, docs/reliability.md "Faults"; disk and checkpoint
faults: test_faults.py).

- The server SIGKILLed mid-stream: the bridge says `reconnecting`, then `connected` to a new
  server on the same endpoint; the dead server's recording is a valid WAV holding every chunk
  it sent (the bridge's chunk files), and no partial chunk.
- The bridge's JACK server (private, dummy driver) SIGKILLed while a job plays: the bridge plays
  on as files only (as with --no-audio: chunk WAVs and /continuo/chunk), says so
  (`/continuo/error` naming the device, `/continuo/status no-audio`) and still exits cleanly
  (PortAudio hangs if the dead stream is stopped or closed). A bridge started with no JACK
  server at all does the same, unless a --device was asked for: then it exits 2 naming it.

Prints its figures as `FAULT {json}` lines (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from bridge_fixtures import BridgeProcess, Replies
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from jack_fixtures import jack_env
from server_fixtures import SR, ServerProcess, start_server, wait_for

from continuo.server.engine.chunks import ChunkPlan

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def paced(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that paces its chunks as playback needs them (chunks keep coming)."""
    server = start_server(model_dir, tmp_path_factory.mktemp("serve"))
    yield server
    server.stop()


def _report(fault: str, **figures: object) -> None:
    print("FAULT", json.dumps({"fault": fault, **figures}), flush=True)


def _wait_status(replies: Replies, word: str, count: int = 1, timeout_s: float = 60) -> None:
    wait_for(lambda: sum(a[0] == word for a in replies.of("/continuo/status")) >= count,
             timeout_s, f"{count} × /continuo/status {word}")


def _chunk_files(replies: Replies) -> list[Path]:
    return [Path(args[0]) for args in replies.of("/continuo/chunk")]


# --- the server killed mid-stream ---------------------------------------------------------------


def test_a_server_killed_mid_stream_leaves_a_whole_recording_and_the_bridge_reconnects(
    model_dir: Path, tmp_path: Path,
) -> None:
    first = start_server(model_dir, tmp_path / "a")  # paced: chunks as playback needs them
    replies = Replies()
    bridge = BridgeProcess(first.endpoint, replies.port, tmp_path / "bridge", "--no-audio")
    second = None
    try:
        _wait_status(replies, "connected", timeout_s=30)
        bridge.send("/continuo/generate", "prompt.wav", 120.0, 8)
        replies.wait_for("/continuo/chunk", count=6, timeout_s=60)
        first.stop(signal.SIGKILL)
        killed = time.monotonic()
        _wait_status(replies, "reconnecting", timeout_s=30)
        noticed_s = time.monotonic() - killed
        restarting = time.monotonic()
        second = start_server(model_dir, tmp_path / "b", endpoint=first.endpoint)
        answering = time.monotonic()  # the new server answered a hello
        _wait_status(replies, "connected", count=2, timeout_s=30)
        connected = time.monotonic()
    finally:
        code = bridge.close()
        if second is not None:
            second.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    files = _chunk_files(replies)
    job = files[0].parent.name
    assert [f.name for f in files] == [f"{i:05d}.wav" for i in range(len(files))]
    sent = np.concatenate([sf.read(f, dtype="float32")[0] for f in files])
    wav = first.out / f"{job}.wav"
    recorded = sf.read(wav, dtype="float32")[0]
    assert sf.info(wav).frames == len(recorded)  # the header counts every sample on disk...
    assert 0 < wav.stat().st_size - 4 * len(recorded) <= 100  # ... and only a header besides
    np.testing.assert_array_equal(recorded[:len(sent)], sent)  # every chunk the bridge got
    plan = ChunkPlan.of(120, "4/4", 1, SR, 8)
    boundaries = [plan.start_sample(i) for i in range(plan.n_chunks + 1)]
    assert len(recorded) in boundaries, "the recording ends inside a chunk"
    extra = boundaries.index(len(recorded)) - len(files)
    assert 0 <= extra <= 2, f"{extra} chunks recorded that never reached the bridge"
    assert len(files) < plan.n_chunks  # it was killed mid-stream
    assert "reason" not in json.loads(wav.with_suffix(".json").read_text())  # never closed
    _report("server SIGKILL", chunks_received=len(files), chunks_recorded=len(files) + extra,
            noticed_s=round(noticed_s, 2), restart_to_connected_s=round(connected - restarting, 2),
            connected_after_hello_s=round(max(0.0, connected - answering), 2))


def _start_jackd(name: str) -> subprocess.Popen:
    process = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", "48000", "-p", "256"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["jack_lsp"], env=jack_env(name), capture_output=True).returncode:
        assert process.poll() is None and time.monotonic() < deadline, "jackd did not start"
        time.sleep(0.2)
    return process


def _release(name: str) -> None:
    """A SIGKILLed jackd leaves its entry in JACK's server registry (8 for the whole machine,
    reclaimed only by a server of the same name: once 8 are left, no JACK server starts): start
    one of that name and stop it cleanly, and remove the client semaphores it left."""
    process = _start_jackd(name)
    process.terminate()
    process.wait(10)
    for path in Path("/dev/shm").glob(f"jack_sem.*_{name}_*"):
        path.unlink(missing_ok=True)


def test_the_bridge_plays_on_as_files_when_its_jack_server_dies(
    paced: ServerProcess, tmp_path: Path,
) -> None:
    name = f"continuo-fault-{os.getpid()}-{time.monotonic_ns() % 100_000}"
    jackd = _start_jackd(name)
    replies = Replies()
    bridge = BridgeProcess(paced.endpoint, replies.port, tmp_path / "bridge", "--quantize",
                           "none", env=jack_env(name))
    try:
        _wait_status(replies, "connected", timeout_s=30)
        bridge.send("/continuo/generate", "prompt.wav", 120.0, 2)
        replies.wait_for("/continuo/playing", timeout_s=60)
        chunks_before = len(replies.of("/continuo/chunk"))
        jackd.kill()
        killed = time.monotonic()
        jackd.wait(10)
        error = replies.wait_for("/continuo/error", timeout_s=10)[0][0]
        noticed_s = time.monotonic() - killed
        _wait_status(replies, "no-audio", timeout_s=10)
        done = replies.wait_for("/continuo/done", timeout_s=60)[0]
        bridge.send("/continuo/generate", "prompt.wav", 120.0, 1)  # a new job: files only
        second = replies.wait_for("/continuo/done", count=2, timeout_s=60)[1]
    finally:
        jackd.kill()
        code = bridge.close()  # exits: the dead stream is left alone
        replies.close()
        jackd.wait(10)
        _release(name)
    assert code == 0, bridge.log.read_text()
    assert error.startswith("audio: output 'system' (JACK Audio Connection Kit) stopped")
    assert "files only" in error
    assert done[1] == "finished" and second[1] == "finished"
    files = _chunk_files(replies)
    assert len(files) == 8 + 4 and all(f.is_file() for f in files)
    assert chunks_before < 8  # the first job still streamed when JACK went
    assert not replies.of("/continuo/played")  # nothing claims the cut-off job played whole
    _report("JACK server killed", noticed_s=round(noticed_s, 3), chunks_before=chunks_before,
            chunks_written=len(files))


def test_a_bridge_with_no_jack_server_starts_as_files_only_unless_a_device_is_asked_for(
    paced: ServerProcess, tmp_path: Path,
) -> None:
    env = jack_env(f"continuo-absent-{os.getpid()}")
    asked = subprocess.run([sys.executable, "-m", "continuo.bridge.cli", "--device", "system",
                            "--osc-port", "0"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert asked.returncode == 2
    assert "continuo-bridge: error: cannot open audio output 'system'" in asked.stderr
    replies = Replies()
    bridge = BridgeProcess(paced.endpoint, replies.port, tmp_path / "bridge", env=env)
    try:
        _wait_status(replies, "no-audio", timeout_s=30)
        bridge.send("/continuo/generate", "prompt.wav", 120.0, 1)
        done = replies.wait_for("/continuo/done", timeout_s=60)[0]
    finally:
        code = bridge.close()
        replies.close()
    assert code == 0, bridge.log.read_text()
    error = replies.of("/continuo/error")[0][0]
    assert error.startswith("audio: cannot open audio output the default")
    assert "files only" in error
    assert done[1] == "finished" and len(_chunk_files(replies)) == 4
