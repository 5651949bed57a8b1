"""How close a codec's output is to its input, as defined in NOTES-codec.md.

- SI-SDR in dB (higher is better), of zero-mean signals.
- log-mel L1: mean over STFT windows 2048, 1024, 512, 256, 128 (Hann, hop = window / 4,
  min(80, n_fft / 4) mel bands) of mean |ln(mel_ref + 1e-5) − ln(mel_test + 1e-5)|, and its
  "<3.8 kHz" variant over the bands centred below 3.8 kHz (lower is better). The mel spectrogram
  is of the STFT magnitude (librosa, power 1), as in the training loss.
- frame-wise chroma agreement: mean cosine of 12-bin chroma (STFT power, n_fft 4096, hop 1024,
  bins 50 Hz–4 kHz, no octave weighting) between reference and test, frames whose reference
  energy is under 1% of the clip's peak frame energy skipped.

`evaluate_codec` runs any `AcousticCodec` over held-out clips at several bandwidths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import librosa
import numpy as np
import torch

from continuo.server.audio import load_audio
from continuo.server.tokenizers.codec import AcousticCodec, EncodedAudio

MEL_WINDOWS = (2048, 1024, 512, 256, 128)
LOG_EPS = 1e-5
LOW_BAND_HZ = 3800.0
CHROMA_N_FFT = 4096
CHROMA_HOP = 1024
CHROMA_BAND_HZ = (50.0, 4000.0)
CHROMA_MIN_ENERGY = 0.01


def _pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D float64 copies, the test cut or zero-padded to the reference's length."""
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    est = np.asarray(test, dtype=np.float64).reshape(-1)[: len(ref)]
    return ref, np.pad(est, (0, len(ref) - len(est)))


def si_sdr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of `test` against `reference`, in dB."""
    ref, est = _pair(reference, test)
    ref, est = ref - ref.mean(), est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + 1e-20)
    target = alpha * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + 1e-20) / (np.dot(noise, noise) + 1e-20)))


def log_mel_l1(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """(log-mel L1 over all bands, over bands centred below 3.8 kHz)."""
    ref, est = _pair(reference, test)
    full, low = [], []
    for n_fft in MEL_WINDOWS:
        n_mels = min(80, n_fft // 4)
        kwargs = {"sr": sample_rate, "n_fft": n_fft, "hop_length": n_fft // 4, "window": "hann",
                  "n_mels": n_mels, "power": 1.0}
        diff = np.abs(np.log(librosa.feature.melspectrogram(y=ref, **kwargs) + LOG_EPS)
                      - np.log(librosa.feature.melspectrogram(y=est, **kwargs) + LOG_EPS))
        centres = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
        full.append(diff.mean())
        low.append(diff[centres < LOW_BAND_HZ].mean())
    return float(np.mean(full)), float(np.mean(low))


def _chroma(power: np.ndarray, sample_rate: int) -> np.ndarray:
    """STFT power [bins, frames] → chroma [12, frames] from bins inside the chroma band."""
    fb = librosa.filters.chroma(sr=sample_rate, n_fft=CHROMA_N_FFT, n_chroma=12, octwidth=None)
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=CHROMA_N_FFT)
    fb[:, (freqs < CHROMA_BAND_HZ[0]) | (freqs > CHROMA_BAND_HZ[1])] = 0.0
    return fb @ power


def chroma_agreement(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Mean frame-wise cosine between the chroma of `reference` and `test` (nan if silent)."""
    ref, est = _pair(reference, test)
    stft = {"n_fft": CHROMA_N_FFT, "hop_length": CHROMA_HOP, "window": "hann"}
    p_ref = np.abs(librosa.stft(ref, **stft)) ** 2
    p_est = np.abs(librosa.stft(est, **stft)) ** 2
    c_ref, c_est = _chroma(p_ref, sample_rate), _chroma(p_est, sample_rate)
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=CHROMA_N_FFT)
    band = (freqs >= CHROMA_BAND_HZ[0]) & (freqs <= CHROMA_BAND_HZ[1])
    energy = p_ref[band].sum(axis=0)
    if energy.max() <= 0:
        return math.nan
    keep = energy >= CHROMA_MIN_ENERGY * energy.max()
    dots = (c_ref * c_est).sum(axis=0)
    norms = np.linalg.norm(c_ref, axis=0) * np.linalg.norm(c_est, axis=0)
    return float(np.mean(dots[keep] / (norms[keep] + 1e-20)))


def codec_metrics(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> dict[str, float]:
    """All four figures for one clip."""
    mel_all, mel_low = log_mel_l1(reference, test, sample_rate)
    return {
        "si_sdr_db": si_sdr_db(reference, test),
        "log_mel_l1": mel_all,
        "log_mel_l1_below_3k8": mel_low,
        "chroma_agreement": chroma_agreement(reference, test, sample_rate),
    }


def read_clip(path: Path, sample_rate: int, seconds: float) -> np.ndarray:
    """The first `seconds` of an audio file, mono float32 [T] at `sample_rate`."""
    audio = load_audio(path, sample_rate=sample_rate)
    return audio.samples[0, : round(seconds * sample_rate)]


def bandwidth_label(kbps: float) -> str:
    return f"{kbps:g}kbps"


def evaluate_codec(
    codec: AcousticCodec,
    items: Sequence[Path | object],
    seconds: float = 10.0,
    bandwidths_kbps: Sequence[float] = (1.5, 3.0, 6.0),
) -> dict[str, dict[str, float]]:
    """Mean metrics per bandwidth over the first `seconds` of each clip.

    items: paths, or objects with a `.path` (ManifestItem). Each clip is encoded once with the
    most codebooks and decoded from each prefix (RVQ codes nest). Returns
    {"1.5kbps": {"si_sdr_db": ..., "log_mel_l1": ..., "log_mel_l1_below_3k8": ...,
    "chroma_agreement": ...}, ...}. The codec's `n_codebooks` is restored afterwards.
    """
    kbps_per_codebook = math.log2(codec.codebook_size) * codec.frame_rate / 1000.0
    counts = {kbps: max(1, math.floor(kbps / kbps_per_codebook + 1e-6)) for kbps in bandwidths_kbps}
    scores: dict[float, list[dict[str, float]]] = {kbps: [] for kbps in bandwidths_kbps}
    previous = codec.n_codebooks
    try:
        codec.n_codebooks = max(counts.values())
        for item in items:
            clip = read_clip(Path(getattr(item, "path", item)), codec.sample_rate, seconds)
            audio = torch.from_numpy(clip)[None, None].repeat(1, codec.channels, 1)  # [1, C, T]
            encoded = codec.encode(audio)
            for kbps, n in counts.items():
                prefix = EncodedAudio(encoded.codes[:, :n], encoded.scale)
                decoded = codec.decode(prefix)[0].mean(dim=0).cpu().numpy()
                scores[kbps].append(codec_metrics(clip, decoded, codec.sample_rate))
    finally:
        codec.n_codebooks = previous
    return {
        bandwidth_label(kbps): {k: float(np.nanmean([s[k] for s in rows])) for k in rows[0]}
        for kbps, rows in scores.items() if rows
    }


def format_codec_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    """Markdown table of `evaluate_codec` results, one row per bandwidth."""
    lines = [f"{title}\n" if title else ""]
    lines.append("| bandwidth | SI-SDR dB | log-mel L1 | log-mel L1 <3.8 kHz | chroma agreement |")
    lines.append("|---|---|---|---|---|")
    for label, m in results.items():
        lines.append(
            f"| {label} | {m['si_sdr_db']:+.2f} | {m['log_mel_l1']:.3f} | "
            f"{m['log_mel_l1_below_3k8']:.3f} | {m['chroma_agreement']:.3f} |"
        )
    return "\n".join(lines).lstrip("\n") + "\n"
