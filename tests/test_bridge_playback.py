"""`continuo-bridge` playing a real server's continuation on JACK (dummy driver): 16 bars with
the player never late, every chunk starting on its bar within 1 ms on the DAC clock, and the
trigger-to-sound time reported; a new job takes over at the next bar of the clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from bridge_fixtures import BridgeProcess, Replies
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from jack_fixtures import jack_env
from server_fixtures import start_server

pytestmark = pytest.mark.timeout(240)


def test_sixteen_bars_through_the_bridge_play_on_their_bars(
    model_dir: Path, tmp_path: Path, jack_server: str,
) -> None:
    server = start_server(model_dir, tmp_path / "server")
    replies = Replies()
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path / "bridge", "--quantize",
                           "none", "--chunk-beats", "1", env=jack_env(jack_server))
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        bridge.send("/continuo/generate", "prompt.wav", 132.0, 16)
        job, latency_s, _ = replies.wait_for("/continuo/playing")[0]
        played = replies.wait_for("/continuo/played", timeout_s=90)[0]
    finally:
        code = bridge.close()
        server.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    assert 0 < latency_s < 60 / 132 * 4, latency_s  # sound within a bar of the trigger
    name, chunks, late_samples, max_error_ms, timed, underflows = played
    assert name == job and chunks == 64  # 16 bars of 4/4 in 1-beat chunks
    assert late_samples == 0, bridge.log.read_text()  # the player never ran dry
    assert timed >= 1  # chunks up to the JACK server's first xrun, if it had one (see below)
    assert max_error_ms < 1.0, (max_error_ms, timed, underflows)
    assert len(replies.of("/continuo/chunk")) == 64


def test_a_new_job_takes_over_on_the_next_bar_of_the_clock(
    model_dir: Path, tmp_path: Path, jack_server: str,
) -> None:
    """Internal clock at 150 BPM, jobs quantised to bars: each starts on a bar line of the clock
    (within 1 ms), the second cuts the first short with a crossfade at its bar."""
    server = start_server(model_dir, tmp_path / "server")
    replies = Replies()
    bridge = BridgeProcess(server.endpoint, replies.port, tmp_path / "bridge", "--tempo", "150",
                           "--quantize", "bar", env=jack_env(jack_server))
    try:
        replies.wait_for("/continuo/status", timeout_s=30)
        bridge.send("/continuo/generate", "prompt.wav", 150.0, 8)
        first = replies.wait_for("/continuo/playing")[0]
        bridge.send("/continuo/generate", "prompt.wav", 150.0, 2)
        second = replies.wait_for("/continuo/playing", count=2)[1]
        played = {p[0]: p for p in replies.wait_for("/continuo/played", count=2, timeout_s=60)}
    finally:
        code = bridge.close()
        server.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    tolerance_beats = 1e-3 * 150 / 60
    for job, latency_s, beat in (first, second):
        assert abs(beat - 4 * round(beat / 4)) < tolerance_beats, (job, beat)
        assert 0 < latency_s <= 60 / 150 * 4 + 1.0  # the next bar once its audio exists
    assert second[2] > first[2]
    assert played[first[0]][1] < 32  # cut short: fewer than its 8 bars of 1-beat chunks played
    assert played[second[0]][1] == 8  # 2 bars, whole
