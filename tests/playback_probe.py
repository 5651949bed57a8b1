"""Run by tests/test_playback_jack.py in a subprocess (PortAudio picks the JACK server named by
$JACK_DEFAULT_SERVER when sounddevice is imported): plays N bars of synthetic 1-beat chunks at
the model's rate through `Player` on the JACK device, each chunk handed over shortly before it
is due (as a stream would), and prints what the player measured as JSON."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from continuo.bridge.playback import Player
from continuo.server.engine.chunks import ChunkPlan, chunk_at

MODEL_RATE = 24_000


def main(bars: int, tempo: float, meter: str) -> None:
    plan = ChunkPlan.of(tempo, meter, 1, MODEL_RATE, bars)
    player = Player(samplerate=48_000, lead_s=0.2)
    player.start()
    time.sleep(1.0)  # the bridge opens its stream at start-up, long before the first job
    started = time.monotonic()
    frames = []
    for index in range(plan.n_chunks):
        chunk = chunk_at(plan, index)
        due = started + 0.2 + chunk.start_sample / MODEL_RATE
        time.sleep(max(0.0, due - 0.15 - time.monotonic()))  # arrives 150 ms ahead
        t = np.arange(chunk.n_samples) / MODEL_RATE
        pcm = (0.2 * np.sin(2 * np.pi * (220 + 20 * index) * t)).astype(np.float32)
        if index == 0:
            player.start_job("probe")
        frames.append(player.schedule("probe", index, pcm, MODEL_RATE, chunk.beat_position,
                                      chunk.beat_position + 1, tempo))
        if index == 0:
            origin = frames[0]
    time.sleep(chunk.n_samples / MODEL_RATE + 0.5)
    player.close()
    stats = player.stats
    print(json.dumps({
        "origin": origin, "frames": frames, "underflows": stats.underflows,
        "late_samples": stats.late_samples, "underflow_frames": stats.underflow_frames,
        "slowest_callback_s": stats.slowest_callback_s,
        "starts": [{"index": s.index, "frame": s.frame, "error_s": s.error_s}
                   for s in stats.starts]}))


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
