"""Continuation metrics on audio with known answers: rendered piano progressions (known keys and
chords), click trains (known tempo and onset rate), tones (known timbre), cut and seamless
joins."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
from audio_fixtures import C_MAJOR_PROGRESSION, progression_notes, render_piano, tone

from continuo.server.evaluation.continuation_metrics import (
    METRICS,
    Key,
    Reference,
    chroma_cosine,
    estimate_key,
    key_agreement,
    key_relation,
    key_score,
    mfcc_distance,
    onset_rate_hz,
    score_continuation,
    seam_flux_ratio,
    spectral_flux,
    tempo_bpm,
    tempo_error,
)

SR = 24000
A_MINOR_PROGRESSION = [[57, 60, 64], [53, 57, 60], [52, 56, 59], [57, 60, 64]]  # Am F E Am


@pytest.fixture(scope="module")
def c_major() -> np.ndarray:
    return render_piano(progression_notes(), SR)


@pytest.fixture(scope="module")
def f_sharp_major() -> np.ndarray:
    return render_piano(progression_notes(transpose=6), SR)


def clicks(bpm: float, seconds: float) -> np.ndarray:
    return librosa.clicks(times=np.arange(0.0, seconds, 60.0 / bpm), sr=SR,
                          length=int(seconds * SR)).astype(np.float32)


def test_chroma_cosine_same_harmony_high_other_key_low(c_major: np.ndarray,
                                                      f_sharp_major: np.ndarray) -> None:
    assert chroma_cosine(c_major, c_major, SR) == pytest.approx(1.0)
    assert chroma_cosine(0.2 * c_major, c_major, SR) == pytest.approx(1.0)
    octave_up = render_piano(progression_notes(transpose=12), SR)
    far = chroma_cosine(f_sharp_major, c_major, SR)
    assert chroma_cosine(octave_up, c_major, SR) > 0.9 > 0.7 > far
    assert math.isnan(chroma_cosine(np.zeros(SR), c_major, SR))


@pytest.mark.parametrize(("transpose", "name"), [(0, "C major"), (2, "D major"),
                                                 (-5, "G major"), (-3, "A major")])
def test_key_of_rendered_progressions(transpose: int, name: str) -> None:
    audio = render_piano(progression_notes(transpose=transpose), SR)
    assert estimate_key(audio, SR).name == name


def test_key_of_a_minor_progression_and_agreement(c_major: np.ndarray,
                                                  f_sharp_major: np.ndarray) -> None:
    a_minor = render_piano(progression_notes(A_MINOR_PROGRESSION), SR)
    assert estimate_key(a_minor, SR).name == "A minor"
    assert key_agreement(c_major, c_major, SR) == 1.0
    assert key_agreement(c_major, a_minor, SR) == 0.3  # relative
    assert key_agreement(c_major, f_sharp_major, SR) == 0.0
    assert math.isnan(key_agreement(np.zeros(SR), c_major, SR))


def test_key_relations_follow_mirex_weights() -> None:
    c, g, f = Key(0, "major", 1.0), Key(7, "major", 1.0), Key(5, "major", 1.0)
    a_min, c_min, e_min = Key(9, "minor", 1.0), Key(0, "minor", 1.0), Key(4, "minor", 1.0)
    assert [key_relation(c, k) for k in (c, g, f, a_min, c_min, e_min)] == [
        "same", "fifth", "fifth", "relative", "parallel", "other"]
    assert key_relation(a_min, c) == "relative" and key_relation(e_min, Key(9, "minor", 1)) == \
        "fifth"
    assert [key_score(c, k) for k in (c, g, a_min, c_min, e_min)] == [1.0, 0.5, 0.3, 0.2, 0.0]
    assert math.isnan(key_score(None, c))


def test_click_train_tempo_and_onset_rate() -> None:
    click_120 = clicks(120, 8.0)
    assert tempo_bpm(click_120, SR) == pytest.approx(120, rel=0.05)
    assert onset_rate_hz(click_120, SR) == pytest.approx(2.0, abs=0.2)
    assert onset_rate_hz(clicks(240, 8.0), SR) == pytest.approx(4.0, abs=0.3)
    assert tempo_bpm(clicks(90, 8.0), SR) == pytest.approx(90, rel=0.05)
    assert onset_rate_hz(np.zeros(SR), SR) == 0.0 and math.isnan(tempo_bpm(np.zeros(SR), SR))


def test_tempo_error_tolerates_octaves_only() -> None:
    assert tempo_error(120, 120) == 0.0
    assert tempo_error(60, 120) == 0.0 and tempo_error(240, 120) == 0.0
    assert tempo_error(132, 120) == pytest.approx(0.1)
    assert tempo_error(90, 120) == pytest.approx(0.25)  # 90 vs 120, not vs 60 (0.5)
    assert math.isnan(tempo_error(math.nan, 120)) and math.isnan(tempo_error(100, 0))


def test_mfcc_distance_ignores_loudness_not_timbre(c_major: np.ndarray) -> None:
    assert mfcc_distance(c_major, 0.25 * c_major, SR) < 1e-3
    same_kind = mfcc_distance(c_major, render_piano(progression_notes(transpose=2), SR), SR)
    sine = mfcc_distance(c_major, tone(261.6, len(c_major) / SR, SR), SR)
    assert sine > 3 * same_kind


def test_hard_cut_has_a_much_larger_seam_ratio_than_a_seamless_split(
    c_major: np.ndarray, f_sharp_major: np.ndarray
) -> None:
    for seam in (30_000, 50_000, 70_000):  # between and on chord onsets
        seamless = seam_flux_ratio(c_major[:seam], c_major[seam:], SR)
        cut = seam_flux_ratio(c_major[:seam], f_sharp_major[seam:], SR)
        assert cut > 3 * seamless, (seam, seamless, cut)
    steady = tone(440, 2.0, SR)
    click = steady.copy()
    click[SR] += 0.8
    assert seam_flux_ratio(click[:SR], click[SR:], SR) > 5 * seam_flux_ratio(
        steady[:SR], steady[SR:], SR)


def test_seam_is_the_continuation_start_not_anywhere_in_the_clip(
    c_major: np.ndarray, f_sharp_major: np.ndarray
) -> None:
    joined = np.concatenate([c_major[:50_000], f_sharp_major[50_000:]])  # cut at 50 000
    at_cut = seam_flux_ratio(joined[:50_000], joined[50_000:], SR)
    away = seam_flux_ratio(joined[:38_000], joined[38_000:], SR)  # 0.5 s before the cut
    assert at_cut > 3 * away
    assert len(spectral_flux(joined, SR)) == len(joined) // 256  # centred frames: T / hop + 1


def test_score_continuation_of_the_truth_and_of_a_wrong_key() -> None:
    c_major, f_sharp_major = (render_piano(progression_notes(C_MAJOR_PROGRESSION * 3,
                                                             transpose=t), SR) for t in (0, 6))
    seam = 17 * SR // 4  # 12 s of chords, one a second: prompt 4.25 s, continuation 4 s
    ref = Reference.of(c_major[:seam], c_major[seam: seam + 4 * SR], SR)
    truth = score_continuation(ref, ref.truth)
    wrong = score_continuation(ref, f_sharp_major[seam: seam + 4 * SR])
    assert set(truth) == set(METRICS)
    assert truth["chroma_cosine"] == pytest.approx(1.0) and truth["key_agreement"] == 1.0
    assert wrong["chroma_cosine"] < 0.8 and wrong["key_agreement"] == 0.0
    assert wrong["seam_flux_ratio"] > 2 * truth["seam_flux_ratio"]
    assert truth["onset_rate_ratio"] == pytest.approx(1.0, abs=0.25)
    assert truth["tempo_error"] < 0.05 and truth["mfcc_distance"] < wrong["mfcc_distance"] + 5


def test_seam_region_covers_a_crossfade_and_what_happens_inside_it() -> None:
    # a steady tone whose continuation is a noisier rendering of the same tone (as a codec's)
    rng = np.random.default_rng(1)
    steady = tone(440, 4.0, SR)
    noisy = (steady + 0.02 * rng.standard_normal(len(steady))).astype(np.float32)
    seam, lead = 2 * SR, 1_200
    hard = seam_flux_ratio(steady[:seam], noisy[seam:], SR)
    faded = seam_flux_ratio(steady[:seam], noisy[seam:], SR, lead_in=noisy[seam - lead: seam])
    assert faded < 0.75 * hard, (hard, faded)
    # a click 40 ms before the seam is inside the crossfade's region, and counted
    clicked = steady.copy()
    clicked[seam - 960] += 0.8
    assert seam_flux_ratio(clicked[:seam], noisy[seam:], SR, lead_in=noisy[seam - lead: seam]) \
        > 2 * faded
    # a hard join measured over the same region as a crossfade still sees its cut
    assert seam_flux_ratio(steady[:seam], noisy[seam:], SR, region=lead) >= hard
