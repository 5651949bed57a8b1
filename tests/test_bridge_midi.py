"""MIDI into a real bridge over JACK MIDI (dummy driver), with a real server: a knob (CC)
changes a live parameter from the job's next chunk, MIDI clock at 100 BPM sets the bridge's tempo
within 0.1 BPM, a pad starts a job, and a CC learned over OSC is saved and still works after the
bridge restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import mido
import pytest
from bridge_fixtures import BridgeProcess, Replies
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from jack_fixtures import jack_env
from midi_fixtures import BACKEND, send_clock
from server_fixtures import ServerProcess, start_server

pytestmark = pytest.mark.timeout(240)
MAP = """
[cc.74]
param = "temperature"
low = 0.5
high = 1.5

[notes.36]
action = "generate"
clip = "prompt.wav"
bars = 1
"""


@pytest.fixture
def rig(model_dir: Path, tmp_path: Path, jack_midi: str,
        ) -> Iterator[tuple[ServerProcess, Replies, Path]]:
    server = start_server(model_dir, tmp_path / "server")
    replies = Replies()
    yield server, replies, tmp_path
    server.stop()
    replies.close()


def _bridge(server: ServerProcess, replies: Replies, folder: Path, jack: str,
            *extra: str) -> tuple[BridgeProcess, mido.ports.BaseOutput]:
    """A bridge with its MIDI port on JACK, and a MIDI output connected to that port."""
    bridge = BridgeProcess(server.endpoint, replies.port, folder, "--no-audio", "--midi",
                           "--midi-api", "jack", *extra, env=jack_env(jack))
    backend = mido.Backend(BACKEND, load=True)
    deadline = time.monotonic() + 30
    while "Continuo:Continuo" not in backend.get_output_names():
        assert time.monotonic() < deadline and bridge.process.poll() is None, \
            bridge.log.read_text()
        time.sleep(0.1)
    return bridge, backend.open_output("Continuo:Continuo")


def test_a_knob_changes_the_running_job_from_its_next_chunk(rig, jack_midi: str) -> None:
    server, replies, folder = rig
    (folder / "map.toml").write_text(MAP)
    bridge, out = _bridge(server, replies, folder / "b", jack_midi, "--midi-map",
                          str(folder / "map.toml"))
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        out.send(mido.Message("note_on", note=36, velocity=100))  # the pad: 1 bar of prompt.wav
        replies.wait_for("/continuo/chunk", timeout_s=30)
        for value in range(0, 128, 8):  # a knob turn: 16 CCs, merged into few requests
            out.send(mido.Message("control_change", control=74, value=value))
        out.send(mido.Message("control_change", control=74, value=127))
        acks = replies.wait_for("/continuo/param", timeout_s=10)
        deadline = time.monotonic() + 5
        while replies.of("/continuo/param")[-1][1] != 1.5 and time.monotonic() < deadline:
            time.sleep(0.02)
        chunks_then = len(replies.of("/continuo/chunk"))
        done = replies.wait_for("/continuo/done", timeout_s=60)[0]
    finally:
        out.close()
        code = bridge.close()
    assert code == 0, bridge.log.read_text()
    acks = replies.of("/continuo/param")
    assert len(acks) < 17 and acks[-1][:2] == ["temperature", 1.5], acks
    from_chunk = acks[-1][2]
    assert 0 < from_chunk <= chunks_then + 2  # the next one made (the server runs ~1 s ahead)
    log = json.loads(Path(done[2]).with_suffix(".json").read_text())["params_log"]
    applied = [e for e in log if e["params"].get("temperature") == 1.5]
    assert applied and applied[0]["from_chunk"] == from_chunk, log


def test_midi_clock_at_100_bpm_sets_the_tempo(rig, jack_midi: str) -> None:
    server, replies, folder = rig
    bridge, out = _bridge(server, replies, folder / "b", jack_midi, "--clock", "midi")
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        out.send(mido.Message("start"))
        send_clock(out, 100.0, 24 * 8, time.perf_counter() + 0.05)  # 8 beats, 4.8 s
        bridge.send("/continuo/status")  # while the clock runs
        status = replies.wait_for("/continuo/status", count=2, timeout_s=10)[-1]
        out.send(mido.Message("stop"))
    finally:
        out.close()
        code = bridge.close()
    assert code == 0, bridge.log.read_text()
    assert abs(status[2] - 100.0) < 0.1, status


def test_a_learned_knob_survives_a_restart(rig, jack_midi: str) -> None:
    server, replies, folder = rig
    midi_map = folder / "learned.toml"  # does not exist yet: an empty map, created by learn
    bridge, out = _bridge(server, replies, folder / "b1", jack_midi, "--midi-map", str(midi_map))
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        bridge.send("/continuo/learn", "top_p")
        replies.wait_for("/continuo/status", count=2, timeout_s=10)
        out.send(mido.Message("control_change", channel=2, control=21, value=64))
        assert replies.wait_for("/continuo/learned", timeout_s=10)[0] == ["top_p", 21]
    finally:
        out.close()
        assert bridge.close() == 0, bridge.log.read_text()
    assert "[cc.21]" in midi_map.read_text()
    bridge, out = _bridge(server, replies, folder / "b2", jack_midi, "--midi-map", str(midi_map))
    try:
        replies.wait_for("/continuo/status", count=3, timeout_s=30)
        out.send(mido.Message("control_change", channel=2, control=21, value=127))
        ack = replies.wait_for("/continuo/param", timeout_s=10)[0]
    finally:
        out.close()
        assert bridge.close() == 0, bridge.log.read_text()
    assert ack == ["top_p", 1.0, -1]  # no job runs: the next one starts with it
