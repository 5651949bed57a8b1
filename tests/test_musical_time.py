"""Exact beat/bar → sample maths: the issue's example, rounding, validation, tiling properties."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from continuo.server.errors import ConfigError
from continuo.server.musical_time import (
    MAX_BARS,
    Meter,
    bar_beat,
    bar_to_sample,
    beats_to_samples,
    exact,
    samples_to_beats,
    span_samples,
)

SAMPLE_RATES = [8000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000]


def half_up_samples(beats: Fraction, bpm: Fraction, sample_rate: int) -> int:
    """Independent integer arithmetic: round_half_up(p/q beats * 60 * sr / (r/s) BPM)."""
    num = beats.numerator * 60 * sample_rate * bpm.denominator
    den = beats.denominator * bpm.numerator
    return (2 * num + den) // (2 * den)


def test_bar_10000_at_93_7_bpm_in_7_8_at_48k_is_exact() -> None:
    # 10,000 bars of 7 eighths = 35,000 quarter notes; 93.7 BPM = 937/10 quarter notes a minute.
    # samples = 10000 * 7 * 4/8 * 60 * 48000 * 10 / 937, rounded half-up, in integers only:
    num = 10000 * 7 * 4 * 60 * 48000 * 10
    den = 8 * 937
    expected = (2 * num + den) // (2 * den)
    assert expected == 1_075_773_746
    assert bar_to_sample(10000, 93.7, Meter(7, 8), 48000) == expected
    assert bar_to_sample(10000, "93.7", Meter.parse("7/8"), 48000) == expected
    assert bar_to_sample(10000, Fraction(937, 10), Meter(7, 8), 48000) == expected


def test_exact_reads_floats_as_their_decimals() -> None:
    assert exact(93.7) == Fraction(937, 10) != Fraction(93.7)
    assert exact(np.float32(93.7)) == Fraction(937, 10)
    assert exact(np.int64(7)) == 7
    assert exact("7/2") == exact(" 3.5 ") == exact(Decimal("3.5")) == Fraction(7, 2)
    assert exact(1e20) == 10**20
    for bad in (float("nan"), float("inf"), "fast", True, None, "1/0"):
        with pytest.raises(ConfigError):
            exact(bad)  # type: ignore[arg-type]


def test_meter() -> None:
    assert Meter(4, 4).quarter_beats_per_bar == 4
    assert Meter(2, 2).quarter_beats_per_bar == 4
    assert Meter(6, 8).quarter_beats_per_bar == 3
    assert Meter(7, 8).quarter_beats_per_bar == Fraction(7, 2)
    assert Meter(3, 16).quarter_beats_per_bar == Fraction(3, 4)
    assert str(Meter.parse(" 7/8 ")) == "7/8"
    for numerator, denominator in [(0, 4), (65, 4), (4, 3), (4, 0), (4, 128), (4.0, 4), (True, 4)]:
        with pytest.raises(ConfigError, match="meter"):
            Meter(numerator, denominator)  # type: ignore[arg-type]
    for text in ("7", "7/8/8", "a/b", "-3/4", ""):
        with pytest.raises(ConfigError, match="meter"):
            Meter.parse(text)


def test_rounding_is_half_up() -> None:
    assert beats_to_samples(1, 120, 48000) == 24000
    assert beats_to_samples(1, 120, 8001) == 4001  # 4000.5 → 4001
    assert beats_to_samples(Fraction(1, 2), 120, 8001) == 2000  # 2000.25 → 2000
    assert beats_to_samples(Fraction(3, 2), 120, 8001) == 6001  # 6000.75 → 6001
    assert beats_to_samples("1/3", 93.7, 48000) == 10245  # 10245.46...
    assert bar_to_sample(0, 93.7, Meter(7, 8), 48000) == 0


def test_span_and_bar_beat_examples() -> None:
    assert span_samples(0, "1/3", 120, 44100) == (0, 7350)
    assert [span_samples(i, 1, 93.7, 48000) for i in range(3)] == [
        (0, 30736), (30736, 30737), (61473, 30736),
    ]
    assert bar_beat(8, Meter(7, 8)) == (2, 1)
    assert bar_beat("7/2", Meter(7, 8)) == (1, 0)
    assert samples_to_beats(24000, 120, 48000) == 1


@pytest.mark.parametrize("bpm", [19.99, 999.01, 0, -120, float("nan"), "fast"])
def test_absurd_tempo_is_refused(bpm: object) -> None:
    with pytest.raises(ConfigError):
        beats_to_samples(1, bpm, 48000)  # type: ignore[arg-type]
    assert beats_to_samples(1, 20, 48000) == 144000
    assert beats_to_samples(1, 999, 48000) == 2883  # 2882.88...


@pytest.mark.parametrize("bar", [-1, MAX_BARS + 1, 10**12, 1.5, True])
def test_negative_or_huge_bars_are_refused(bar: object) -> None:
    with pytest.raises(ConfigError, match="bar"):
        bar_to_sample(bar, 120, Meter(4, 4), 48000)  # type: ignore[arg-type]


def test_other_bad_arguments_are_refused() -> None:
    with pytest.raises(ConfigError, match="beat position"):
        beats_to_samples(-1, 120, 48000)
    with pytest.raises(ConfigError, match="sample rate"):
        beats_to_samples(1, 120, 0)
    with pytest.raises(ConfigError, match="sample rate"):
        beats_to_samples(1, 120, 48000.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive"):
        span_samples(0, 0, 120, 48000)
    with pytest.raises(ConfigError, match="non-negative"):
        samples_to_beats(-5, 120, 48000)


bpms = st.decimals(min_value=20, max_value=999, places=3).map(Fraction) | st.floats(20, 999)
meters = st.builds(Meter, st.integers(1, 16), st.sampled_from([1, 2, 4, 8, 16]))
chunk_sizes = st.builds(Fraction, st.integers(1, 48), st.sampled_from([1, 2, 3, 4, 6, 8, 12]))


@settings(max_examples=100, deadline=None)
@given(
    bpm=bpms, meter=meters, chunk_beats=chunk_sizes, sample_rate=st.sampled_from(SAMPLE_RATES),
    start_bar=st.integers(0, 200_000), n_bars=st.integers(1000, 5000),
)
def test_chunks_tile_exactly(
    bpm: Fraction | float, meter: Meter, chunk_beats: Fraction, sample_rate: int,
    start_bar: int, n_bars: int,
) -> None:
    # Chunks of several bars when the chunk size would make thousands of bars too many chunks.
    chunk_beats *= max(1, int(n_bars * meter.quarter_beats_per_bar / chunk_beats / 400))
    beat = start_bar * meter.quarter_beats_per_bar
    end_beat = (start_bar + n_bars) * meter.quarter_beats_per_bar
    offset = first = bar_to_sample(start_bar, bpm, meter, sample_rate)
    total = 0
    while beat < end_beat:
        start, length = span_samples(beat, min(chunk_beats, end_beat - beat), bpm, sample_rate)
        assert start == offset == half_up_samples(beat, exact(bpm), sample_rate)
        assert length >= 0
        offset, total, beat = start + length, total + length, beat + chunk_beats
    end = bar_to_sample(start_bar + n_bars, bpm, meter, sample_rate)
    assert offset == end == half_up_samples(end_beat, exact(bpm), sample_rate)
    assert total == end - first


@settings(max_examples=300, deadline=None)
@given(
    beats=st.fractions(min_value=0, max_value=10**6, max_denominator=10**4)
    | st.floats(0, 10**6),
    bpm=bpms, sample_rate=st.sampled_from(SAMPLE_RATES),
)
def test_beats_to_samples_to_beats_within_half_a_sample(
    beats: Fraction | float, bpm: Fraction | float, sample_rate: int
) -> None:
    samples = beats_to_samples(beats, bpm, sample_rate)
    back = samples_to_beats(samples, bpm, sample_rate)
    half_sample_beats = exact(bpm) / (120 * sample_rate)
    assert abs(back - exact(beats)) <= half_sample_beats
    assert beats_to_samples(back, bpm, sample_rate) == samples


@settings(max_examples=200, deadline=None)
@given(k=st.integers(0, 10**11), bpm=bpms, sample_rate=st.sampled_from(SAMPLE_RATES))
def test_exact_halves_round_up_anywhere(k: int, bpm: Fraction | float, sample_rate: int) -> None:
    # The beat position whose exact offset is k + 1/2 samples: floats land on either side.
    beats = Fraction(2 * k + 1, 2) * exact(bpm) / (60 * sample_rate)
    if beats <= 256 * MAX_BARS:
        assert beats_to_samples(beats, bpm, sample_rate) == k + 1
        assert beats_to_samples(beats - Fraction(1, 10**30), bpm, sample_rate) == k
