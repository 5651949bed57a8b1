"""Benchmark: what batching jobs costs on a CPU (issue 9; part of `make bench`, ~2 minutes).

Target (issue 9): on CPU, batching 4 jobs must cost less than 2.5× one job's time per step.

(a) The decoder step alone. One random-weight `Decoder` per size — `small` (d 256, 4 layers,
    4 heads, ff 1024: the realtime preset's stages) and `paper` (d 1024, 12 layers, 16 heads,
    ff 4096) — with the coarse stage's vocabulary (512 semantic + SEP + PAD + 3 × 1024 codes);
    a cache of B rows is prefilled with a 300-position prompt, then `model.step(tokens [B, 1],
    cache)` is timed at exactly that position (the cache truncated back after each step), for
    B = 1 and 4 in float32, in the realtime preset's "mixed" precision (bfloat16 weights,
    CPU-tuned) and in "bf16" (what "mixed" means on a GPU), at 1 and 2 threads.
    The B values alternate in rounds, so a neighbour's load hits both alike; medians are
    reported and the ratio time(B=4) / time(B=1) is asserted < 2.5 for every row.
(b) The engine's stream (`TokenStream.advance_many`):
    four jobs (models/piano, preset realtime, the bundled clip, seeds 0..3) advanced together
    by one block of MIN_BLOCK_S against one job advanced alone by the same block, alternating,
    at 1 and 2 threads; the ratio of the median block times is asserted < 2.5.

Run it through `make bench` (OMP_WAIT_POLICY=PASSIVE): spinning OpenMP threads on a shared
2-core machine measure the load, not the code.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from continuo.server.audio import load_audio
from continuo.server.continuation import Continuation
from continuo.server.engine.stream import TokenStream
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.kv_cache import KVCache
from continuo.server.model.precision import with_precision

ROOT = Path(__file__).resolve().parents[2]
CLIP = ROOT / "models" / "piano" / "clip.flac"
TARGET_RATIO = 2.5
BATCH, PROMPT_POSITIONS = 4, 300
COARSE_VOCAB = 512 + 1 + 1 + 3 * 1024  # semantic | SEP | PAD | 3 coarse codebooks (delay)
SIZES = {"small": DecoderConfig.small, "paper": DecoderConfig.paper}
PRECISIONS = ("float32", "mixed", "bf16")  # model/precision.py
THREADS = (1, 2)
ROUNDS = {"small": 8, "paper": 4}
STEPS_PER_ROUND = {"small": 10, "paper": 3}
STREAM_ROUNDS, MIN_BLOCK_S, CONTEXT_S = 8, 0.24, 5.0


def _threads(n: int) -> Callable[[], None]:
    """Set torch's intra-op threads to n; → a function that restores the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    return lambda: torch.set_num_threads(previous)


def _median_ratio(times: dict[int, list[float]]) -> tuple[float, float, float]:
    one, many = statistics.median(times[1]), statistics.median(times[BATCH])
    return one, many, many / one


# --- (a) the decoder step -----------------------------------------------------------------------


def _prefilled(model: Decoder, batch: int) -> KVCache:
    """A cache of `batch` rows holding a random PROMPT_POSITIONS-token prompt, room for one more."""
    cache = model.new_cache(batch, PROMPT_POSITIONS + 1)
    model.step(torch.randint(0, model.config.vocab_size, (batch, PROMPT_POSITIONS)), cache)
    return cache


def _step_times_s(model: Decoder, cache: KVCache, steps: int) -> list[float]:
    """`steps` single-token steps, each at position PROMPT_POSITIONS (truncated back after)."""
    tokens = torch.randint(0, model.config.vocab_size, (cache.batch_size, 1))
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        model.step(tokens, cache)
        times.append(time.perf_counter() - started)
        cache.truncate(PROMPT_POSITIONS)
    return times


@torch.inference_mode()
def _decoder_row(model: Decoder, size: str, threads: int) -> tuple[float, float, float]:
    """→ median step seconds for B=1 and B=4, and their ratio."""
    restore = _threads(threads)
    try:
        caches = {b: _prefilled(model, b) for b in (1, BATCH)}
        for b in caches:  # first calls allocate
            _step_times_s(model, caches[b], 2)
        times: dict[int, list[float]] = {1: [], BATCH: []}
        for _ in range(ROUNDS[size]):
            for b in (1, BATCH):
                times[b] += _step_times_s(model, caches[b], STEPS_PER_ROUND[size])
        return _median_ratio(times)
    finally:
        restore()


def test_a_batch_of_four_costs_less_than_two_and_a_half_single_steps() -> None:
    rows, failures = [], []
    for size, make in SIZES.items():
        base = Decoder(make(vocab_size=COARSE_VOCAB, max_seq_len=PROMPT_POSITIONS + 1))
        for precision in PRECISIONS:  # with_precision converts in place: a copy each
            model = with_precision(copy.deepcopy(base), precision)
            for threads in THREADS:
                one, many, ratio = _decoder_row(model, size, threads)
                rows.append(f"{size:>6} {precision:>9} {threads:>7} | {one * 1000:8.2f} "
                            f"{many * 1000:8.2f} | {ratio:5.2f}")
                if not ratio < TARGET_RATIO:
                    failures.append(f"{size} {precision} {threads} threads: ×{ratio:.2f}")
    print(f"\n\ndecoder step at position {PROMPT_POSITIONS}, vocabulary {COARSE_VOCAB}, "
          f"random weights (median ms)\n  size precision threads |   B=1 ms   B={BATCH} ms | "
          f"ratio\n" + "\n".join(rows))
    assert not failures, f"batch of {BATCH} ≥ {TARGET_RATIO}× one step: {failures}"


# --- (b) the engine's stream --------------------------------------------------------------------


def _stream_ratio(stream: TokenStream, threads: int) -> tuple[float, float, float]:
    """Median seconds of one block for one job (`advance`) and for BATCH jobs together
    (`advance_many`), alternating; and their ratio."""
    restore = _threads(threads)
    try:
        audio = load_audio(CLIP)
        mono = audio.samples.mean(axis=0)
        preset = stream.pipeline.preset
        states = [stream.start(mono, audio.sample_rate, seed, CONTEXT_S) for seed in range(BATCH)]
        alone = stream.start(mono, audio.sample_rate, BATCH, CONTEXT_S)
        n = stream.frames_for(alone, round(MIN_BLOCK_S * stream.sample_rate))
        times: dict[int, list[float]] = {1: [], BATCH: []}
        for repeat in range(STREAM_ROUNDS + 1):  # the first round warms up
            started = time.perf_counter()
            _, alone = stream.advance(alone, n, preset)
            middle = time.perf_counter()
            blocks = stream.advance_many(states, [n] * BATCH, [preset] * BATCH)
            ended = time.perf_counter()
            states = [state for _, state in blocks]
            if repeat:
                times[1].append(middle - started)
                times[BATCH].append(ended - middle)
        return _median_ratio(times)
    finally:
        restore()


def test_four_jobs_advance_together_for_less_than_two_and_a_half_blocks_of_one() -> None:
    stream = TokenStream(Continuation("realtime"))
    rows, failures = [], []
    for threads in THREADS:
        one, many, ratio = _stream_ratio(stream, threads)
        rows.append(f"{threads:>7} | {one * 1000:8.1f} {many * 1000:8.1f} | {ratio:5.2f}")
        if not ratio < TARGET_RATIO:
            failures.append(f"{threads} threads: ×{ratio:.2f}")
    print(f"\n\nstream block of {MIN_BLOCK_S:g} s, preset realtime (models/piano), one job "
          f"(advance) vs {BATCH} (advance_many), median ms\nthreads |   1 job  {BATCH} jobs | "
          f"ratio\n" + "\n".join(rows))
    assert not failures, f"{BATCH} jobs ≥ {TARGET_RATIO}× one job's block: {failures}"
