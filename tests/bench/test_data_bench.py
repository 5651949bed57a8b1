"""Benchmark: `continuo data piano` rendering speed and where its time goes (`make bench`).

Renders a fixed, varied sample of the music21 corpus (the first PIECES of the corpus order:
chorales, Palestrina, folk tunes, ABC collections) with one worker per core; prints audio
seconds produced per wall second and the CPU seconds of each stage. Target: ≥ 30x realtime.
"""

from __future__ import annotations

import os
from pathlib import Path

from audio_fixtures import needs_fluidsynth

from continuo.server.data.piano import render_corpus

PIECES = 24
TARGET_X = 30.0


def test_piano_rendering_speed(tmp_path: Path) -> None:
    needs_fluidsynth()
    jobs = os.cpu_count() or 1
    manifest = render_corpus(tmp_path, limit=PIECES, jobs=jobs, show_progress=False)
    run = manifest.extra["last_run"]
    stages = run["stage_cpu_s"]
    total_cpu_s = sum(stages.values())
    print(f"\ncontinuo data piano, {run['pieces']} pieces, {jobs} jobs: "
          f"{run['audio_s'] / 60:.1f} min of audio in {run['wall_s']:.1f} s = "
          f"{run['speed_x_realtime']:.0f}x realtime ({run['failures']} failed)")
    print("  CPU seconds per stage: " + ", ".join(
        f"{k.removesuffix('_s')} {v:.1f} ({100 * v / total_cpu_s:.0f}%)" for k, v in stages.items()
    ))
    assert run["speed_x_realtime"] >= TARGET_X
