"""Where the prompt gives way to the codec: pure functions on sample arrays, no I/O.

The continuation is codec audio; the prompt is the musician's own recording. Even a perfect
model meets the prompt with a jump at the seam, because a 6 kbps codec renders the same music
with different fine detail (noise between the partials, phase): measured on 32 held-out piano
clips, the codec's own reconstruction of the true continuation butted onto the original prompt
has a seam flux 5.2× the median (the true continuation 2.1×; the codec's rendering of both halves
1.9×). Two ways to join, both exact in length:

- hard join (`splice`): the continuation starts on the sample after the prompt's last; only its
  first SPLICE_S are shifted so that it starts from the prompt's last sample rather than from
  the codec's version of it (no click). For a player that can only butt the continuation on.
- crossfade (`crossfade_join`): over the prompt's last CROSSFADE_S the original fades out and the
  codec's rendering of those same samples (the `lead_in`, decoded with the continuation) fades
  in, equal power; from the seam on the codec plays alone. The change of fine detail is spread
  over CROSSFADE_S instead of one STFT frame. For a player that owns the prompt's playback (the
  offline `OUT.full.wav`, loop mode, the bridge's crossfades at bars).

`codec_join` turns the codec's decoding of [prompt tail | continuation] into both parts: the
lead-in, and the continuation spliced so that lead-in → continuation is continuous and the
continuation alone still starts from the prompt's last sample.
"""

from __future__ import annotations

import numpy as np

SPLICE_S = 0.002  # the codec's offset from the prompt at the seam fades out over this long
CROSSFADE_S = 0.05  # the original gives way to the codec over the prompt's last 50 ms


def splice(audio: np.ndarray, jump: float, n_samples: int) -> np.ndarray:
    """audio [T] shifted by `jump` at its first sample, the shift fading linearly to 0 over
    n_samples: the continuation then starts where the prompt's last sample left off instead of
    where the codec's version of it did (their difference is a click at the seam)."""
    fade = np.clip(1.0 - np.arange(len(audio)) / max(n_samples, 1), 0.0, 1.0)
    return (audio + jump * fade).astype(np.float32)


def codec_join(prompt_last: float, decoded_tail: np.ndarray, decoded: np.ndarray,
               splice_n: int) -> tuple[np.ndarray, np.ndarray]:
    """decoded_tail [L] (the codec's rendering of the prompt's last L samples, L >= 1) and
    decoded [T] (its continuation, decoded in the same pass) → (lead_in [L], audio [T]).

    audio is `decoded` spliced onto `prompt_last`; lead_in is `decoded_tail` with the same jump
    ramped in linearly from 0 at its first sample to all of it at its last, so lead_in ++ audio
    is as continuous as the codec's own output and lead_in[0] is the codec's sample."""
    jump = float(prompt_last) - float(decoded_tail[-1])
    n = len(decoded_tail)
    ramp = np.arange(1, n + 1) / n
    lead_in = (decoded_tail + jump * ramp).astype(np.float32)
    return lead_in, splice(decoded, jump, splice_n)


def crossfade_join(prompt: np.ndarray, lead_in: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """prompt [P], lead_in [L] (L <= P; may be empty), audio [T] → joined [P + T]: the prompt
    with its last L samples crossfaded (equal power) into lead_in, then audio."""
    n, p = len(lead_in), len(prompt)
    if n > p:
        raise ValueError(f"lead-in of {n} samples is longer than the prompt ({p})")
    t = np.arange(1, n + 1) / n  # the last sample of the fade is the codec's alone
    tail = prompt[p - n:] * np.cos(t * np.pi / 2) + lead_in * np.sin(t * np.pi / 2)
    return np.concatenate([prompt[: p - n], tail, audio]).astype(np.float32)
