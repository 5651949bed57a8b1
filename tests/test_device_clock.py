"""`DeviceClock`: the DAC clock the player measures chunk starts on, from block stamps that
arrive late by the callback's wake-up delay (PortAudio's JACK host API stamps a block when the
callback runs). Wake-up jitter must not read as a chunk off its bar; a cycle the device skipped
(its timeline jumps against our frame count) must."""

from __future__ import annotations

import numpy as np

from continuo.bridge.playback import CLOCK_WINDOW_S, DeviceClock

RATE, PERIOD = 48_000, 256


def stamps(n_blocks: int, seed: int, skip_at: int | None = None) -> list[tuple[int, float]]:
    """(first frame, stamp) of n blocks: the cycle's DAC time 10.0 s + frame time, plus a
    wake-up delay (mostly under 0.2 ms, one block in ten up to 3 ms); from block `skip_at` on,
    the device runs one period ahead of the frames we delivered (it skipped a cycle)."""
    rng = np.random.default_rng(seed)
    delays = np.where(rng.random(n_blocks) < 0.1, rng.uniform(0, 3e-3, n_blocks),
                      rng.uniform(0, 2e-4, n_blocks))
    delays[0] = 0.0
    out = []
    for block in range(n_blocks):
        frame = block * PERIOD
        ahead = PERIOD if skip_at is not None and block >= skip_at else 0
        out.append((frame, 10.0 + (frame + ahead) / RATE + float(delays[block])))
    return out


def test_wake_up_delays_drop_out_of_the_clock() -> None:
    clock = DeviceClock(RATE)
    blocks = stamps(2_000, seed=0)
    raw = max(stamp - (10.0 + frame / RATE) for frame, stamp in blocks)
    errors = [clock.observe(frame, stamp) - (10.0 + frame / RATE) for frame, stamp in blocks]
    assert raw > 2e-3  # what the stamps alone would have reported as a start error
    assert max(errors) < 2e-4, max(errors)
    assert min(errors) >= 0.0


def test_a_skipped_cycle_shows_once_the_window_has_passed() -> None:
    clock = DeviceClock(RATE)
    skip_at = 1_000
    blocks = stamps(2_000, seed=1, skip_at=skip_at)
    errors = [clock.observe(frame, stamp) - (10.0 + frame / RATE) for frame, stamp in blocks]
    window_blocks = int(np.ceil(CLOCK_WINDOW_S * RATE / PERIOD))
    settled = errors[skip_at + window_blocks + 1:]
    assert min(settled) > 0.9 * PERIOD / RATE  # 5.3 ms off: a chunk there fails the 1 ms bound
    assert max(errors[:skip_at]) < 2e-4
