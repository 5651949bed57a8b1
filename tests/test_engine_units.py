"""The streaming engine's pure parts: chunk plans (exact tiling, the end of a finite job), live
parameters onto a preset, and the growing recording (WAV + sidecar). No model, no server."""

from __future__ import annotations

import itertools
import json
import math
import struct
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from continuo.server.engine.chunks import MAX_CHUNK_BEATS, ChunkPlan, chunk_at
from continuo.server.engine.params import RANGES, check_params, sampling_preset
from continuo.server.engine.recorder import Recording, pcm_sha256
from continuo.server.errors import ConfigError
from continuo.server.musical_time import (
    MAX_BARS,
    METER_DENOMINATORS,
    Meter,
    bar_beat,
    bar_to_sample,
    beats_to_samples,
)
from continuo.server.presets import Preset, StageSampling

# ---------------------------------------------------------------------------------- chunks.py


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tempo": 19.9}, "tempo 19.9 BPM is out of range"),
        ({"tempo": 1000}, "tempo 1000 BPM is out of range"),
        ({"tempo": "nan"}, "'nan' is not a finite number"),
        ({"tempo": True}, "boolean True"),
        ({"meter": "7/9"}, "meter denominator 9"),
        ({"meter": "0/4"}, "meter numerator 0"),
        ({"meter": "seven"}, "meter 'seven' is not of the form N/D"),
        ({"chunk_beats": 0}, "chunk length 0 beats is out of range"),
        ({"chunk_beats": "-1/3"}, "chunk length -1/3 beats is out of range"),
        ({"chunk_beats": MAX_CHUNK_BEATS + 1}, f"chunk length {MAX_CHUNK_BEATS + 1} beats"),
        ({"sample_rate": 0}, "sample rate 0 Hz is out of range"),
        ({"bars": 0}, "bars 0 must be a whole number"),
        ({"bars": 2.5}, "bars 2.5 must be a whole number"),
        ({"bars": True}, "bars True must be a whole number"),
        ({"bars": MAX_BARS + 1}, f"bars {MAX_BARS + 1} must be a whole number"),
    ],
)
def test_chunk_plan_rejects_bad_values_naming_them(kwargs: dict, message: str) -> None:
    args = {"tempo": 120, "meter": "4/4", "chunk_beats": 1, "sample_rate": 48000, "bars": 8,
            **kwargs}
    with pytest.raises(ConfigError, match=message):
        ChunkPlan.of(**args)


def test_chunk_plan_reads_a_float_tempo_as_its_decimal() -> None:
    plan = ChunkPlan.of(93.7, "7/8", "1/3", 48000)
    assert plan.tempo == Fraction(937, 10) and plan.meter == Meter(7, 8)
    assert plan.chunk_beats == Fraction(1, 3) and plan.bars is None
    assert ChunkPlan.of(Decimal("93.7"), Meter(7, 8), Fraction(1, 3), 48000) == plan


def test_chunks_of_a_third_beat_at_93_7_bpm_in_7_8_tile_exactly_up_to_bar_10000() -> None:
    plan = ChunkPlan.of(93.7, "7/8", "1/3", 48000)
    last_bar_index = 10_000 * 21 // 2  # 7/8 is 3.5 beats: 10.5 chunks of 1/3 beat per bar
    for index in [*range(50), *range(last_bar_index - 30, last_bar_index + 30)]:
        chunk, after = chunk_at(plan, index), chunk_at(plan, index + 1)
        assert chunk.index == index and not chunk.last
        assert chunk.start_sample == beats_to_samples(Fraction(index, 3), 93.7, 48000)
        assert chunk.start_sample == plan.start_sample(index)
        assert chunk.end_sample == after.start_sample  # no gap, no overlap
        assert chunk.n_samples in (10245, 10246)  # 10245.46... samples per third of a beat
        assert chunk.beat_position == Fraction(index, 3)
        assert (chunk.bar, chunk.beat) == bar_beat(Fraction(index, 3), Meter(7, 8))
    bar_10000 = chunk_at(plan, last_bar_index)
    assert (bar_10000.bar, bar_10000.beat) == (10_000, 0)
    assert bar_10000.start_sample == 1075773746 == bar_to_sample(10_000, 93.7, Meter(7, 8), 48000)


def _one_decimal_tempo(tenths: int, kind: str) -> float | str | Decimal:
    text = f"{tenths // 10}.{tenths % 10}"
    return {"float": float(text), "str": text, "decimal": Decimal(text)}[kind]


@st.composite
def plans(draw: st.DrawFn, finite: bool) -> ChunkPlan:
    tenths = draw(st.integers(200, 9990))
    tempo = _one_decimal_tempo(tenths, draw(st.sampled_from(["float", "str", "decimal"])))
    meter = Meter(draw(st.integers(1, 64)), draw(st.sampled_from(METER_DENOMINATORS)))
    q = draw(st.integers(1, 16))
    chunk_beats = Fraction(draw(st.integers(1, MAX_CHUNK_BEATS * q)), q)
    rate = draw(st.sampled_from([8000, 22050, 24000, 44100, 48000, 96000, 192000])
                | st.integers(8000, 192000))
    bars = draw(st.integers(1, 10_000)) if finite else None
    plan = ChunkPlan.of(tempo, meter, chunk_beats, rate, bars)
    assert plan.tempo == Fraction(tenths, 10)
    return plan


@settings(max_examples=300, deadline=None)
@given(plan=plans(finite=False), data=st.data())
def test_loop_chunks_tile_exactly_and_start_at_their_exact_beat(plan: ChunkPlan,
                                                                data: st.DataObject) -> None:
    assert plan.n_chunks is None and plan.total_samples is None and plan.total_beats is None
    max_index = int(10_000 * plan.meter.quarter_beats_per_bar / plan.chunk_beats)
    index = data.draw(st.integers(0, max_index))
    chunk, after = chunk_at(plan, index), chunk_at(plan, index + 1)
    position = index * plan.chunk_beats
    exact = position * 60 * plan.sample_rate / plan.tempo
    assert chunk.start_sample == beats_to_samples(position, plan.tempo, plan.sample_rate)
    assert abs(chunk.start_sample - exact) <= Fraction(1, 2)  # no drift, even at bar 10,000
    assert chunk.end_sample == after.start_sample
    assert chunk.n_samples >= 1 and not chunk.last and not after.last
    assert chunk.beat_position == position
    assert (chunk.bar, chunk.beat) == bar_beat(position, plan.meter)
    assert 0 <= chunk.beat < plan.meter.quarter_beats_per_bar


@settings(max_examples=300, deadline=None)
@given(plan=plans(finite=True), data=st.data())
def test_a_finite_plan_ends_at_its_last_bar(plan: ChunkPlan, data: st.DataObject) -> None:
    assert plan.bars is not None and plan.n_chunks is not None
    total_beats = plan.bars * plan.meter.quarter_beats_per_bar
    end = bar_to_sample(plan.bars, plan.tempo, plan.meter, plan.sample_rate)
    assert plan.total_beats == total_beats and plan.total_samples == end
    assert plan.n_chunks == math.ceil(total_beats / plan.chunk_beats)
    last = chunk_at(plan, plan.n_chunks - 1)
    assert last.last and last.end_sample == end and last.n_samples >= 1
    assert last.beat_position + plan.chunk_beats >= total_beats  # cut, never longer
    if plan.n_chunks > 1:
        before = chunk_at(plan, plan.n_chunks - 2)
        assert not before.last and before.end_sample == last.start_sample
        index = data.draw(st.integers(0, plan.n_chunks - 2))
        assert not chunk_at(plan, index).last
    with pytest.raises(ConfigError, match=f"chunk {plan.n_chunks} is outside"):
        chunk_at(plan, plan.n_chunks)


def test_every_chunk_of_a_short_job_sums_to_its_length_and_only_the_last_is_cut() -> None:
    plan = ChunkPlan.of(93.7, "7/8", 1, 48000, bars=3)  # 10.5 beats: 11 chunks, the last half
    chunks = [chunk_at(plan, i) for i in range(plan.n_chunks or 0)]
    assert len(chunks) == 11 and [c.last for c in chunks] == [False] * 10 + [True]
    assert sum(c.n_samples for c in chunks) == plan.total_samples == 322732
    assert chunks[-1].beat_position == 10 and chunks[-1].n_samples == 322732 - 307364
    assert all(a.end_sample == b.start_sample for a, b in itertools.pairwise(chunks))
    assert [(c.bar, c.beat) for c in chunks[:5]] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, Fraction(1, 2))]
    with pytest.raises(ConfigError, match="chunk -1 is outside"):
        chunk_at(plan, -1)


# ---------------------------------------------------------------------------------- params.py


def test_check_params_accepts_in_range_values_as_floats() -> None:
    assert check_params({}) == {}
    edges = {"temperature": 0, "top_k": 1000, "top_p": 1, "variation": 0.5}
    checked = check_params(edges)
    assert checked == edges and all(type(v) is float for v in checked.values())
    assert check_params({"temperature": 5.0, "top_k": 0.0, "top_p": 0.0, "variation": 1.0})


def test_check_params_names_every_bad_value_in_one_error() -> None:
    with pytest.raises(ConfigError) as err:
        check_params({"temp": 1.0, "temperature": 5.5, "top_k": 1001, "top_p": -0.1,
                      "variation": 0.3, "density": 2.0})
    message = str(err.value)
    for part in ("unknown parameter 'temp'", "temperature 5.5 is out of range 0..5",
                 "top_k 1001 is out of range 0..1000", "top_p -0.1 is out of range 0..1",
                 "unknown parameter 'density'"):
        assert part in message
    assert "variation" not in message.replace("(known: temperature, top_k, top_p, variation)", "")
    with pytest.raises(ConfigError, match="temperature nan is out of range"):
        check_params({"temperature": float("nan")})


def test_check_params_rejects_a_fractional_top_k() -> None:
    with pytest.raises(ConfigError, match=r"top_k 2\.5 must be a whole number"):
        check_params({"top_k": 2.5})
    assert check_params({"top_k": 3.0}) == {"top_k": 3.0}


def _preset(semantic: StageSampling, coarse: StageSampling, fine: StageSampling) -> Preset:
    return Preset(name="p", context_s=3.0, seed=5, bandwidth_kbps=1.5, notes="n",
                  semantic=semantic, coarse=coarse, fine=fine)


PRESET = _preset(StageSampling(temperature=0.8, top_k=5, top_p=0.9),
                 StageSampling(temperature=1.2, top_k=10, top_p=0.8),
                 StageSampling(temperature=0.5, top_k=0, top_p=1.0))
OTHER_FIELDS = ("name", "model_dir", "bandwidth_kbps", "context_s", "seed", "precision", "notes")


def test_sampling_preset_sets_every_stage_and_keeps_the_rest() -> None:
    assert sampling_preset(PRESET, {}) == PRESET
    out = sampling_preset(PRESET, {"temperature": 2.0, "top_k": 7.0, "top_p": 0.5})
    for stage in ("semantic", "coarse", "fine"):
        assert getattr(out, stage) == StageSampling(temperature=2.0, top_k=7, top_p=0.5)
        assert type(getattr(out, stage).top_k) is int
    assert all(getattr(out, f) == getattr(PRESET, f) for f in OTHER_FIELDS)
    assert PRESET.semantic.temperature == 0.8  # the preset itself is untouched
    assert sampling_preset(PRESET, {"top_p": 0.0}).fine.top_p == 1e-3  # 0 taken as 1e-3


def test_variation_scales_only_the_semantic_temperature_after_temperature() -> None:
    out = sampling_preset(PRESET, {"variation": 0.2})
    assert out.semantic.temperature == pytest.approx(0.8 * 0.7)
    assert (out.semantic.top_k, out.semantic.top_p) == (5, 0.9)
    assert (out.coarse, out.fine) == (PRESET.coarse, PRESET.fine)
    out = sampling_preset(PRESET, {"temperature": 2.0, "variation": 1.0})
    assert out.semantic.temperature == pytest.approx(3.0)  # 2 × 1.5, not 0.8 × 1.5 then 2
    assert out.coarse.temperature == out.fine.temperature == 2.0
    assert sampling_preset(PRESET, {"variation": 0.5}) == PRESET  # 0.5 = as the preset says


stage_samplings = st.builds(
    StageSampling,
    temperature=st.floats(0.0, 10.0),
    top_k=st.integers(0, 1000),
    top_p=st.floats(0.0, 1.0, exclude_min=True),
)
live_params = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(*RANGES["temperature"]),
    "top_k": st.integers(0, 1000).map(float),
    "top_p": st.floats(*RANGES["top_p"]),
    "variation": st.floats(*RANGES["variation"]),
})


@settings(max_examples=300, deadline=None)
@given(stages=st.tuples(stage_samplings, stage_samplings, stage_samplings), params=live_params)
def test_sampling_preset_never_makes_an_invalid_preset(
    stages: tuple[StageSampling, StageSampling, StageSampling], params: dict[str, float]
) -> None:
    preset = _preset(*stages)
    out = sampling_preset(preset, check_params(params))
    assert Preset.model_validate(out.model_dump()) == out  # model_copy does not validate
    for name, base in zip(("semantic", "coarse", "fine"), stages, strict=True):
        got: StageSampling = getattr(out, name)
        temperature = params.get("temperature", base.temperature)
        if name == "semantic":
            temperature *= 0.5 + params.get("variation", 0.5)
        assert got.temperature == pytest.approx(min(temperature, 10.0))
        assert got.top_k == int(params.get("top_k", base.top_k))
        assert got.top_p == max(params.get("top_p", base.top_p), 1e-3)
    assert all(getattr(out, f) == getattr(preset, f) for f in OTHER_FIELDS)


# -------------------------------------------------------------------------------- recorder.py


def test_a_recording_is_a_valid_wav_after_every_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    meta = {"seed": 3, "preset": "tiny", "prompt": {"path": "pcm", "sha256": "ab"}}
    rec = Recording(tmp_path / "rec", "job1", 24000, meta)
    assert rec.wav == tmp_path / "rec" / "job1.wav" and not rec.closed
    written: list[np.ndarray] = []
    for n in (10245, 10246, 1, 5000):
        written.append((0.1 * rng.standard_normal(n)).astype(np.float32))
        rec.write(written[-1])
        info = sf.info(rec.wav)  # read while the recording is still open
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "FLOAT")
        audio, rate = sf.read(rec.wav, dtype="float32")
        assert rate == 24000 and audio.shape == (sum(map(len, written)),)
        np.testing.assert_array_equal(audio, np.concatenate(written))
    sidecar = json.loads(rec.sidecar.read_text())
    assert sidecar["seed"] == 3 and sidecar["prompt"] == meta["prompt"]
    assert sidecar["job"] == "job1" and sidecar["sample_rate"] == 24000
    assert sidecar["wav"] == str(rec.wav) and sidecar["params_log"] == []
    rec.close("stopped")
    assert sf.info(rec.wav).frames == 25492


def _header_data_bytes(path: Path) -> int:
    """The size its RIFF header gives the WAV's data chunk (what a strict reader trusts)."""
    raw = path.read_bytes()
    at = 12
    while at + 8 <= len(raw):
        chunk_id, size = raw[at:at + 4], struct.unpack("<I", raw[at + 4:at + 8])[0]
        if chunk_id == b"data":
            return size
        at += 8 + size + (size & 1)
    raise AssertionError(f"{path}: no data chunk")


def test_a_recordings_header_counts_every_chunk_while_open(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "j", 24000, {})
    rec.write(np.ones(1000, np.float32))
    assert _header_data_bytes(rec.wav) == 4000  # a reader that trusts the header sees it all
    rec.close("done")
    assert _header_data_bytes(rec.wav) == 4000


def test_the_sidecar_logs_params_and_ends_with_reason_and_summary(tmp_path: Path) -> None:
    rec = Recording(tmp_path, "j", 48000, {"seed": 1})
    # a reader holding the sidecar open keeps reading a whole, older version: each update is a
    # new file moved over the old one, never a rewrite in place
    readers = [rec.sidecar.open("rb")]
    rec.log_params(0, {"temperature": 1.0}, "tiny")
    readers.append(rec.sidecar.open("rb"))
    rec.write(np.zeros(480, np.float32))
    rec.write(np.ones(20, np.float32))
    rec.log_params(2, {"temperature": 0.5, "top_k": 4.0}, "other")
    readers.append(rec.sidecar.open("rb"))
    log = json.loads(rec.sidecar.read_text())["params_log"]
    assert [(e["from_chunk"], e["params"], e["preset"]) for e in log] == [
        (0, {"temperature": 1.0}, "tiny"), (2, {"temperature": 0.5, "top_k": 4.0}, "other")]
    rec.close("done", misses=0, first_chunk_s=0.25)
    old = []
    for reader in readers:
        with reader:
            old.append(json.loads(reader.read()))
    assert [len(m["params_log"]) for m in old] == [0, 1, 2]
    assert all("reason" not in m for m in old) and old[0]["seed"] == 1
    final = json.loads(rec.sidecar.read_text())
    assert final["reason"] == "done" and final["misses"] == 0 and final["first_chunk_s"] == 0.25
    assert final["samples"] == 500 and final["chunks"] == 2 and "ended" in final
    assert final["params_log"] == log and rec.closed
    before = rec.sidecar.read_bytes()
    rec.close("error", misses=9)  # a second close changes nothing
    assert rec.sidecar.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.json", "j.wav"]  # no .tmp left
    assert sf.read(rec.wav)[0].shape == (500,)


def test_pcm_sha256_hashes_little_endian_float32() -> None:
    pcm = np.linspace(-1, 1, 100)
    assert pcm_sha256(pcm) == pcm_sha256(pcm.astype(">f4")) == pcm_sha256(pcm.astype("<f4"))
    assert pcm_sha256(pcm) != pcm_sha256(pcm[:-1])
