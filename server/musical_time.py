"""Exact musical time: beats, bars and tempo → sample offsets, in rational maths.

Conventions (those of every DAW):

- A *beat* is a quarter note, and tempo (BPM) counts quarter notes per minute whatever the
  meter. A 4/4 bar is 4 beats, 2/2 is 4, 6/8 is 3, 7/8 is 7/2 = 3.5.
- Bars and beats count from 0; bar 0 starts at sample 0.
- Times are `fractions.Fraction`, never floats: a float tempo such as 93.7 is read as the decimal
  it prints as (937/10), so the sample offset of bar 10,000 is as exact as the one of bar 1.
- An offset in samples is the exact time rounded *half-up*, `floor(x + 1/2)`: 2.5 → 3, 2.4999 → 2.
  A chunk's start and length come from its two rounded boundaries (`span_samples`), so
  consecutive chunks tile exactly, nothing accumulates, and every boundary is within half a
  sample of the exact time.

    samples = round_half_up(beats * 60 * sample_rate / bpm)

    93.7 BPM, 7/8, 48 kHz, bar 10,000:
      beats   = 10000 * 7/2                        = 35000
      samples = 35000 * 60 * 48000 / (937/10)      = 1008000000000/937 = 1075773745.9978...
              → 1075773746

All functions are pure; bad values raise `ConfigError` naming the value.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from continuo.server.errors import ConfigError

MIN_BPM = 20
MAX_BPM = 999
MAX_METER_NUMERATOR = 64
METER_DENOMINATORS = (1, 2, 4, 8, 16, 32, 64)
MAX_BARS = 1_000_000
# The longest bar (64/1) is 256 quarter notes.
MAX_BEATS = MAX_BARS * 4 * MAX_METER_NUMERATOR
MAX_SAMPLE_RATE = 768_000

Number = int | float | str | Fraction | Decimal


def exact(x: Number) -> Fraction:
    """`x` as an exact fraction; a float is read as the shortest decimal that prints it.

        exact(93.7)   -> Fraction(937, 10)     (not 6594...·2**-46, float's binary value)
        exact("7/2")  -> Fraction(7, 2)
        exact(120)    -> Fraction(120, 1)

    NaN, infinity, booleans and anything not a number raise ConfigError.
    """
    if isinstance(x, bool):
        raise ConfigError(f"expected a number, got the boolean {x!r}")
    try:
        if isinstance(x, Fraction):
            return x
        if isinstance(x, numbers.Integral):
            return Fraction(int(x))
        if isinstance(x, numbers.Real | str):
            # str() of a float is its shortest round-tripping decimal (repr), also for numpy.
            return Fraction(str(x).strip())
        if isinstance(x, Decimal):
            return Fraction(x)
    except (ValueError, ZeroDivisionError, OverflowError) as e:
        raise ConfigError(f"{x!r} is not a finite number ({e})") from e
    raise ConfigError(f"expected a number, got {type(x).__name__} {x!r}")


@dataclass(frozen=True)
class Meter:
    """A time signature, e.g. `Meter(7, 8)`; numerator 1..64, denominator a power of two 1..64."""

    numerator: int
    denominator: int

    def __post_init__(self) -> None:
        for name, value in (("numerator", self.numerator), ("denominator", self.denominator)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ConfigError(f"meter {name} must be an integer, got {value!r}")
        if not 1 <= self.numerator <= MAX_METER_NUMERATOR:
            raise ConfigError(
                f"meter numerator {self.numerator} is out of range 1..{MAX_METER_NUMERATOR}"
            )
        if self.denominator not in METER_DENOMINATORS:
            raise ConfigError(
                f"meter denominator {self.denominator} is not a power of two in "
                f"{', '.join(map(str, METER_DENOMINATORS))}"
            )

    @classmethod
    def parse(cls, text: str) -> Meter:
        """`Meter.parse("7/8") == Meter(7, 8)`."""
        parts = str(text).strip().split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(f"meter {text!r} is not of the form N/D, e.g. 4/4 or 7/8")
        return cls(int(parts[0]), int(parts[1]))

    @property
    def quarter_beats_per_bar(self) -> Fraction:
        """Beats (quarter notes) in one bar, the unit tempo counts: 4/4 → 4, 6/8 → 3, 7/8 → 7/2."""
        return Fraction(4 * self.numerator, self.denominator)

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


def _bpm(bpm: Number) -> Fraction:
    value = exact(bpm)
    if not MIN_BPM <= value <= MAX_BPM:
        raise ConfigError(f"tempo {bpm} BPM is out of range {MIN_BPM}..{MAX_BPM} BPM")
    return value


def _sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise ConfigError(f"sample rate must be an integer number of Hz, got {sample_rate!r}")
    if not 1 <= sample_rate <= MAX_SAMPLE_RATE:
        raise ConfigError(f"sample rate {sample_rate} Hz is out of range 1..{MAX_SAMPLE_RATE}")
    return int(sample_rate)


def _beats(beats: Number, name: str = "beat position") -> Fraction:
    value = exact(beats)
    if not 0 <= value <= MAX_BEATS:
        raise ConfigError(f"{name} {beats} is out of range 0..{MAX_BEATS} beats")
    return value


def _bar(bar: int) -> int:
    if isinstance(bar, bool) or not isinstance(bar, numbers.Integral):
        raise ConfigError(f"bar must be an integer, got {bar!r}")
    if not 0 <= bar <= MAX_BARS:
        raise ConfigError(f"bar {bar} is out of range 0..{MAX_BARS}")
    return int(bar)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def beats_to_samples(beats: Number, bpm: Number, sample_rate: int) -> int:
    """Sample offset of a beat position (quarter notes from 0), rounded half-up.

        beats_to_samples(1, 120, 48000)      -> 24000      (a beat at 120 BPM is 0.5 s)
        beats_to_samples("1/3", 93.7, 48000) -> 10245      (10245.4642... rounded)
        beats_to_samples(1, 120, 8001)       -> 4001       (4000.5, half rounds up)
    """
    exact_samples = _beats(beats) * 60 * _sample_rate(sample_rate) / _bpm(bpm)
    return _round_half_up(exact_samples)


def samples_to_beats(samples: int, bpm: Number, sample_rate: int) -> Fraction:
    """The exact beat position of a sample offset; inverse of `beats_to_samples` within ½ sample.

        samples_to_beats(24000, 120, 48000)  -> Fraction(1, 1)
        samples_to_beats(10245, 93.7, 48000) -> Fraction(639971, 1920000)  (1/3 less 0.46 samples)
    """
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 0:
        raise ConfigError(f"sample offset must be a non-negative integer, got {samples!r}")
    return Fraction(int(samples)) * _bpm(bpm) / (60 * _sample_rate(sample_rate))


def bar_to_sample(bar: int, bpm: Number, meter: Meter, sample_rate: int) -> int:
    """Sample offset where bar `bar` starts (bar 0 starts at 0).

        bar_to_sample(1, 120, Meter(4, 4), 48000)         -> 96000   (4 beats of 0.5 s)
        bar_to_sample(10000, 93.7, Meter(7, 8), 48000)    -> 1075773746
    """
    return beats_to_samples(_bar(bar) * meter.quarter_beats_per_bar, bpm, sample_rate)


def bar_beat(beats: Number, meter: Meter) -> tuple[int, Fraction]:
    """(bar, beat within the bar) of a beat position, both from 0; beats are quarter notes.

        bar_beat(8, Meter(7, 8))     -> (2, Fraction(1, 1))     (bars are 3.5 beats long)
        bar_beat("7/2", Meter(7, 8)) -> (1, Fraction(0, 1))
    """
    position = _beats(beats)
    bar, beat = divmod(position, meter.quarter_beats_per_bar)
    return int(bar), Fraction(beat)


def span_samples(
    start_beat: Number, n_beats: Number, bpm: Number, sample_rate: int
) -> tuple[int, int]:
    """(start, length) in samples of the chunk of `n_beats` beats starting at `start_beat`.

    Both ends are rounded from exact times, so chunk k+1 starts where chunk k ends and the sum
    of lengths is the offset of the last end; lengths may differ by one sample between chunks.

        120 BPM, 44100 Hz, chunks of 1/3 beat (7350 samples each, exact):
          span_samples(0,     "1/3", 120, 44100) -> (0, 7350)
        93.7 BPM, 48000 Hz, chunks of 1 beat (30736.39... samples):
          span_samples(0, 1, 93.7, 48000) -> (0, 30736)
          span_samples(1, 1, 93.7, 48000) -> (30736, 30737)
          span_samples(2, 1, 93.7, 48000) -> (61473, 30736)
    """
    start = _beats(start_beat, "chunk start")
    length = exact(n_beats)
    if length <= 0:
        raise ConfigError(f"chunk length {n_beats} beats must be positive")
    start_samples = beats_to_samples(start, bpm, sample_rate)
    end_samples = beats_to_samples(_beats(start + length, "chunk end"), bpm, sample_rate)
    return start_samples, end_samples - start_samples
