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
        job, latency_s = replies.wait_for("/continuo/playing")[0]
        played = replies.wait_for("/continuo/played", timeout_s=90)[0]
    finally:
        code = bridge.close()
        server.stop()
        replies.close()
    assert code == 0, bridge.log.read_text()
    assert 0 < latency_s < 60 / 132 * 4, latency_s  # sound within a bar of the trigger
    print("played", played, "trigger-to-sound", latency_s)
    name, chunks, late_samples, max_error_ms, timed, underflows = played
    assert name == job and chunks == 64  # 16 bars of 4/4 in 1-beat chunks
    assert late_samples == 0, bridge.log.read_text()  # the player never ran dry
    assert timed >= 1  # chunks up to the JACK server's first xrun, if it had one (see below)
    assert max_error_ms < 1.0, (max_error_ms, timed, underflows)
    assert len(replies.of("/continuo/chunk")) == 64
