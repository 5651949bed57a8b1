"""Benchmark: one KV-cached decoding step at position 100 and at position 1,500 (`make bench`).

Target (issue 4): the step at 1,500 costs at most 1.5× the step at 100, i.e. a step never rebuilds
anything of the sequence's size but reads the cached keys and values. Each step is taken at
exactly its position (the cache is truncated back after it), positions alternate in rounds so a
neighbour's load hits both alike, and the median step is reported. Threads: 2, or
$CONTINUO_BENCH_THREADS.

What grows with position is reading the cached keys and values (2 · layers · positions · d_model
floats per step; at d 256 and 1,500 positions as many bytes as the weights), not the relative
bias (one row, ~20 µs). One key/value head (GQA) cuts that read by n_heads.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from continuo.server.model.decoder import Decoder, DecoderConfig

POSITIONS = (100, 1500)
ROUNDS, STEPS = 10, 30
TARGET_RATIO = 1.5
SIZES = {
    "small (d 256, 4 layers, 4 heads)": DecoderConfig.small(max_seq_len=2048),
    "small, 1 key/value head": DecoderConfig.small(max_seq_len=2048, n_kv_heads=1),
    "d 512, 6 layers, 8 heads": DecoderConfig(
        vocab_size=1024, n_layers=6, n_heads=8, d_model=512, d_ff=2048, max_seq_len=2048
    ),
}


def _step_times_s(model: Decoder, cache, position: int) -> list[float]:
    token = torch.randint(0, model.config.vocab_size, (1, 1))
    times = []
    for _ in range(STEPS):
        start = time.perf_counter()
        model.step(token, cache)
        times.append(time.perf_counter() - start)
        cache.truncate(position)
    return times


@pytest.mark.parametrize("name", list(SIZES))
@torch.inference_mode()
def test_step_time_hardly_grows_with_position(name: str) -> None:
    threads = int(os.environ.get("CONTINUO_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    model = Decoder(SIZES[name]).eval()
    caches = {}
    for position in POSITIONS:
        caches[position] = model.new_cache(1, position + 1)
        model.step(torch.randint(0, model.config.vocab_size, (1, position)), caches[position])
    times: dict[int, list[float]] = {p: [] for p in POSITIONS}
    for _ in range(ROUNDS):
        for position in POSITIONS:
            times[position] += _step_times_s(model, caches[position], position)
    ms = {p: 1000 * statistics.median(t) for p, t in times.items()}
    ratio = ms[1500] / ms[100]
    print(f"\n{name}, {threads} threads, {model.num_params() / 1e6:.1f}M params: step "
          f"{ms[100]:.2f} ms at 100, {ms[1500]:.2f} ms at 1,500 (×{ratio:.2f})")
    assert ratio <= TARGET_RATIO
