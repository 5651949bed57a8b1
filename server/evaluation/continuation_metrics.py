"""How well a continuation follows its prompt: objective figures, each defined exactly here.

All functions take mono float audio [T] and its sample rate; nothing here does I/O. A figure
that cannot be computed (silence, no onsets) is nan, never an exception.

Harmonic (against the true continuation):
- `chroma_frames`: librosa `chroma_cqt` (hop 512, 36 bins per octave, 7 octaves from C1,
  norm=None) [12, F]. CQT, not STFT: its log-spaced bins resolve semitones in the piano's bass
  (an STFT of 4096 at 24 kHz has 5.9 Hz bins, wider than a semitone below ~100 Hz).
- `mean_chroma`: the frames' mean, so louder frames weigh more and silence not at all.
- `chroma_cosine(continuation, reference)`: cosine of the two mean chroma vectors. On rendered
  piano progressions: the same one an octave up 0.92, in the dominant key 0.83, a tritone away
  (C vs F# major) 0.59.
- `estimate_key`: Krumhansl–Kessler probe-tone profiles (Krumhansl 1990), rotated to the 24
  major and minor keys; the key is the one whose profile has the highest Pearson correlation
  with the key chroma: the mean of the chroma frames each scaled to max 1 (librosa's default
  norm), every sounding moment counting alike. The energy-weighted mean let loud low chords
  dominate: it named only 5 of 12 transpositions of a I–vi–IV–V progression right (most as
  the relative minor), the key chroma 10 (the other two: a fifth and a mediant away); the
  A minor i–iv–V–i progression was right in all 12 either way.
- `key_score` / `key_agreement`: MIREX key weights (as mir_eval.key.weighted_score): same key
  1.0; tonic a perfect fifth apart in the same mode (dominant or subdominant, either direction
  here) 0.5; relative major/minor 0.3; parallel major/minor 0.2; anything else 0.

Rhythm (against the prompt):
- `onset_rate_hz`: onsets found by `librosa.onset.onset_detect` (defaults: spectral-flux
  onset strength on a log-power mel spectrogram, hop 512) per second of audio.
- `tempo_bpm`: `librosa.beat.beat_track`'s global tempo (nan when it finds none).
- `tempo_error(tempo, reference)`: relative error with octave tolerance,
  min over k in {1/2, 1, 2} of |tempo − k·reference| / (k·reference): a tempo read at half or
  double the reference's (the usual beat-tracker octave confusion) counts as the same tempo.
- onset-rate ratio: continuation's rate / prompt's rate (1 is best).

Timbre (against the prompt):
- `mfcc_distance`: Euclidean distance between the frame means of 20 MFCCs (librosa defaults:
  128 mel bands, n_fft 2048, hop 512, DCT-II ortho), coefficient 0 (overall loudness)
  excluded, so a quieter but otherwise identical sound has distance 0.

Seam (prompt and continuation joined, seam = the first sample of the continuation; joined hard,
or crossfaded over the prompt's last samples when the system gives a lead-in, see `seam`):
- `spectral_flux`: STFT magnitude (Hann window of FLUX_WINDOW_S seconds, hop a quarter of it,
  centred frames) in dB relative to the clip's loudest bin, floored at −80 dB; the flux between
  consecutive frames is the mean over bins of the positive (half-wave rectified) dB increase.
- `seam_flux_ratio`: the largest flux among the frame pairs where either frame's window holds
  a sample of the seam region (the `region` samples before the seam, at least the crossfade's,
  through the seam sample), divided by the median flux of the whole joined clip. A seamless
  split of one recording scores like any other stretch of it (high when a note starts right
  there: compare with the true continuation's ratio over the same region); a hard cut or a
  click scores far higher. Every system of one evaluation is measured over the same region.

`score_continuation` computes every figure for one continuation against a `Reference` (the
prompt and the true continuation, with their own figures computed once).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import librosa
import numpy as np

from continuo.server.seam import crossfade_join

CHROMA_HOP = 512
CHROMA_BINS_PER_OCTAVE = 36
CHROMA_OCTAVES = 7
N_MFCC = 20
FLUX_WINDOW_S = 1024 / 24000  # 1024 samples at 24 kHz, ~43 ms
FLUX_TOP_DB = 80.0
TEMPO_OCTAVES = (0.5, 1.0, 2.0)
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# MIREX key-detection weights.
KEY_WEIGHTS = {"same": 1.0, "fifth": 0.5, "relative": 0.3, "parallel": 0.2, "other": 0.0}


def _mono(audio: np.ndarray) -> np.ndarray:
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norms) if norms > 0 else math.nan


# --- harmonic -----------------------------------------------------------------------------------


def chroma_frames(audio: np.ndarray, sr: int) -> np.ndarray:
    """[T] → CQT chroma [12, F] (C first, no normalisation); [12, 0] for silence."""
    y = _mono(audio)
    if not np.any(y):
        return np.zeros((12, 0))
    with warnings.catch_warnings():  # short clips: the lowest octaves' filters are longer
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        chroma = librosa.feature.chroma_cqt(
            y=y, sr=sr, hop_length=CHROMA_HOP, bins_per_octave=CHROMA_BINS_PER_OCTAVE,
            n_octaves=CHROMA_OCTAVES, norm=None,
        )
    return chroma.astype(np.float64)


def mean_chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    """[T] → [12] mean chroma (energy-weighted), zeros for silence."""
    return _chroma_means(chroma_frames(audio, sr))[0]


def _chroma_means(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """chroma [12, F] → (mean chroma [12], key chroma [12]: mean of frames scaled to max 1)."""
    if frames.shape[1] == 0:
        return np.zeros(12), np.zeros(12)
    return frames.mean(axis=1), librosa.util.normalize(frames, norm=np.inf, axis=0).mean(axis=1)


def chroma_cosine(continuation: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Cosine similarity of the mean chroma of `continuation` and `reference` (nan if silent)."""
    return _cosine(mean_chroma(continuation, sr), mean_chroma(reference, sr))


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class (0 = C) and mode, with the profile correlation that chose it."""

    tonic: int
    mode: str  # "major" or "minor"
    correlation: float

    @property
    def name(self) -> str:
        return f"{PITCH_CLASSES[self.tonic]} {self.mode}"


def key_from_chroma(chroma: np.ndarray) -> Key | None:
    """[12] key chroma → the best-correlated of the 24 Krumhansl–Kessler keys (None if flat)."""
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.std() == 0:
        return None
    best: Key | None = None
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if best is None or r > best.correlation:
                best = Key(tonic, mode, r)
    return best


def estimate_key(audio: np.ndarray, sr: int) -> Key | None:
    """The key of `audio` by Krumhansl–Kessler profiles on its key chroma (None if silent)."""
    return key_from_chroma(_chroma_means(chroma_frames(audio, sr))[1])


def key_relation(a: Key, b: Key) -> str:
    """'same', 'fifth', 'relative', 'parallel' or 'other' (see the module doc)."""
    step = (b.tonic - a.tonic) % 12
    if a.mode == b.mode:
        return "same" if step == 0 else "fifth" if step in (5, 7) else "other"
    if step == 0:
        return "parallel"
    minor_to_major = 3 if a.mode == "minor" else 9  # A minor → C major: +3; C major → A minor: +9
    return "relative" if step == minor_to_major else "other"


def key_score(a: Key | None, b: Key | None) -> float:
    """MIREX weight of the relation between two keys; nan if either is unknown."""
    if a is None or b is None:
        return math.nan
    return KEY_WEIGHTS[key_relation(a, b)]


def key_agreement(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """`key_score` of the keys estimated from audio `a` and `b`."""
    return key_score(estimate_key(a, sr), estimate_key(b, sr))


# --- rhythm and timbre --------------------------------------------------------------------------


def onset_rate_hz(audio: np.ndarray, sr: int) -> float:
    """Onsets per second (librosa onset detection)."""
    y = _mono(audio)
    if not np.any(y):
        return 0.0
    onsets = librosa.onset.onset_detect(y=y, sr=sr, units="time")
    return len(onsets) / (len(y) / sr)


def tempo_bpm(audio: np.ndarray, sr: int) -> float:
    """Global tempo from librosa beat tracking, BPM; nan when none is found."""
    y = _mono(audio)
    if not np.any(y):
        return math.nan
    tempo, _ = librosa.beat.beat_track(y=y, sr=sr)
    value = float(np.atleast_1d(tempo)[0])
    return value if value > 0 else math.nan


def tempo_error(tempo: float, reference: float) -> float:
    """Octave-tolerant relative tempo error (0 = same tempo, or half or double it)."""
    if not (tempo > 0 and reference > 0):
        return math.nan
    return min(abs(tempo - k * reference) / (k * reference) for k in TEMPO_OCTAVES)


def mfcc_mean(audio: np.ndarray, sr: int) -> np.ndarray:
    """[T] → [N_MFCC - 1] frame mean of MFCCs 1..19 (coefficient 0 dropped)."""
    mfcc = librosa.feature.mfcc(y=_mono(audio), sr=sr, n_mfcc=N_MFCC)
    return mfcc[1:].mean(axis=1).astype(np.float64)


def mfcc_distance(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Euclidean distance between the MFCC means (1..19) of `a` and `b`."""
    return float(np.linalg.norm(mfcc_mean(a, sr) - mfcc_mean(b, sr)))


# --- seam ---------------------------------------------------------------------------------------


def flux_frames(sr: int) -> tuple[int, int]:
    """(n_fft, hop) of the flux STFT at `sr`."""
    n_fft = max(16, 2 * round(FLUX_WINDOW_S * sr / 2))
    return n_fft, n_fft // 4


def spectral_flux(audio: np.ndarray, sr: int) -> np.ndarray:
    """[T] → flux [F - 1]: flux[k] is the mean positive dB rise from STFT frame k to k + 1."""
    n_fft, hop = flux_frames(sr)
    mag = np.abs(librosa.stft(_mono(audio), n_fft=n_fft, hop_length=hop, window="hann",
                              center=True))
    if not np.any(mag):
        return np.zeros(max(mag.shape[1] - 1, 0))
    db = librosa.amplitude_to_db(mag, ref=np.max, top_db=FLUX_TOP_DB)
    return np.maximum(np.diff(db, axis=1), 0.0).mean(axis=0)


def seam_flux_ratio(prompt: np.ndarray, continuation: np.ndarray, sr: int,
                    lead_in: np.ndarray | None = None, region: int = 0) -> float:
    """Flux at the seam (max over the frame pairs touching the seam region: the last
    max(region, len(lead_in)) prompt samples and the seam sample) / median flux of the joined
    clip; joined hard, or crossfaded into lead_in [L] (`seam.crossfade_join`)."""
    prompt, continuation = _mono(prompt), _mono(continuation)
    lead_in = np.zeros(0, np.float32) if lead_in is None else _mono(lead_in)
    joined = crossfade_join(prompt, lead_in, continuation)
    flux = spectral_flux(joined, sr)
    n_fft, hop = flux_frames(sr)
    seam = len(prompt)
    start = max(seam - max(region, len(lead_in)), 0)
    # centred frame m holds samples [m·hop − n_fft/2, m·hop + n_fft/2)
    first = (start - n_fft // 2) // hop + 1
    last = (seam + n_fft // 2) // hop
    lo, hi = max(first - 1, 0), min(last, len(flux) - 1)  # pair k joins frames k and k + 1
    median = float(np.median(flux)) if len(flux) else 0.0
    if hi < lo or median <= 0:
        return math.nan
    return float(flux[lo: hi + 1].max() / median)


# --- one continuation ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Reference:
    """A prompt [T1] and its true continuation [T2] at sr, with their figures computed once;
    seam_region: samples before the seam that every system's seam figure covers."""

    prompt: np.ndarray
    truth: np.ndarray
    sr: int
    prompt_tempo_bpm: float
    prompt_onset_rate_hz: float
    prompt_mfcc: np.ndarray
    truth_chroma: np.ndarray
    truth_key: Key | None
    seam_region: int = 0

    @classmethod
    def of(cls, prompt: np.ndarray, truth: np.ndarray, sr: int, seam_region: int = 0
           ) -> Reference:
        chroma, key_chroma = _chroma_means(chroma_frames(truth, sr))
        return cls(_mono(prompt), _mono(truth), sr, tempo_bpm(prompt, sr),
                   onset_rate_hz(prompt, sr), mfcc_mean(prompt, sr), chroma,
                   key_from_chroma(key_chroma), seam_region)


METRICS = ("chroma_cosine", "key_agreement", "onset_rate_hz", "onset_rate_ratio", "tempo_bpm",
           "tempo_error", "mfcc_distance", "seam_flux_ratio")


def score_continuation(ref: Reference, continuation: np.ndarray,
                       lead_in: np.ndarray | None = None) -> dict[str, float]:
    """Every figure of METRICS for `continuation` (it starts at the prompt's last sample + 1;
    lead_in: its crossfade over the prompt's end, if it has one)."""
    sr = ref.sr
    chroma, key_chroma = _chroma_means(chroma_frames(continuation, sr))
    rate = onset_rate_hz(continuation, sr)
    tempo = tempo_bpm(continuation, sr)
    return {
        "chroma_cosine": _cosine(chroma, ref.truth_chroma),
        "key_agreement": key_score(key_from_chroma(key_chroma), ref.truth_key),
        "onset_rate_hz": rate,
        "onset_rate_ratio": rate / ref.prompt_onset_rate_hz if ref.prompt_onset_rate_hz > 0
        else math.nan,
        "tempo_bpm": tempo,
        "tempo_error": tempo_error(tempo, ref.prompt_tempo_bpm),
        "mfcc_distance": float(np.linalg.norm(mfcc_mean(continuation, sr) - ref.prompt_mfcc)),
        "seam_flux_ratio": seam_flux_ratio(ref.prompt, continuation, sr, lead_in,
                                           ref.seam_region),
    }
