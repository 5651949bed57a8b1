"""Plots a person would rather look at than read: waveform + spectrogram, seam marked.

Matplotlib with the Agg backend (no screen needed); nothing here touches models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_continuation(
    prompt: np.ndarray,
    continuation: np.ndarray,
    sample_rate: int,
    path: Path,
    title: str = "",
    labels: tuple[str, str] = ("prompt", "continuation"),
) -> Path:
    """Waveform (top) and log-mel spectrogram (bottom) of prompt ++ continuation, seam marked.

    prompt: [T1] mono float; continuation: [T2] mono float. Writes a PNG at `path`.
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audio = np.concatenate([prompt, continuation]).astype(np.float32)
    seam_s = len(prompt) / sample_rate
    t = np.arange(len(audio)) / sample_rate
    mel = librosa.feature.melspectrogram(
        y=audio, sr=sample_rate, n_fft=2048, hop_length=256, n_mels=128, fmax=sample_rate / 2
    )
    mel_db = librosa.power_to_db(mel, ref=np.max(mel) if mel.max() > 0 else 1.0, top_db=80)

    fig, (ax_wave, ax_spec) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    split = len(prompt)
    ax_wave.plot(t[:split], audio[:split], lw=0.4, color="tab:blue", label=labels[0])
    ax_wave.plot(t[split:], audio[split:], lw=0.4, color="tab:orange", label=labels[1])
    ax_wave.set_ylabel("amplitude")
    ax_wave.legend(loc="upper right")
    ax_spec.imshow(
        mel_db,
        origin="lower",
        aspect="auto",
        extent=(0.0, len(audio) / sample_rate, 0, mel_db.shape[0]),
        cmap="magma",
    )
    ax_spec.set_ylabel("mel band")
    ax_spec.set_xlabel("seconds")
    for ax in (ax_wave, ax_spec):
        ax.axvline(seam_s, color="white" if ax is ax_spec else "black", ls="--", lw=1.2)
    ax_wave.annotate("seam", (seam_s, ax_wave.get_ylim()[1]), ha="left", va="top")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
