"""The two joins of prompt and codec audio: splice (hard) and crossfade (lead-in)."""

from __future__ import annotations

import numpy as np
import pytest

from continuo.server.seam import codec_join, crossfade_join, splice

SR = 24_000


def test_splice_fades_the_jump_out_over_its_length() -> None:
    audio = np.linspace(0.0, 0.1, 100, dtype=np.float32)
    spliced = splice(audio, 0.5, 10)
    assert spliced.dtype == np.float32
    assert spliced[0] == pytest.approx(0.5) and spliced[5] == pytest.approx(audio[5] + 0.25)
    np.testing.assert_array_equal(spliced[10:], audio[10:])
    assert np.all(np.diff(spliced[:11]) < 0)  # a straight ramp down, no step of its own
    assert splice(audio[:4], 0.5, 10)[3] == pytest.approx(audio[3] + 0.5 * 0.7)  # cut short


def test_codec_join_meets_the_prompt_and_keeps_the_codecs_own_step() -> None:
    t = np.arange(2_000) / SR
    decoded = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # codec: tail ++ new
    tail, new = decoded[:1_200], decoded[1_200:]
    prompt_last = 0.9  # the original is far from the codec's last sample
    lead_in, audio = codec_join(prompt_last, tail, new, splice_n=48)
    assert lead_in.shape == tail.shape and audio.shape == new.shape
    assert lead_in[0] == pytest.approx(tail[0] + (prompt_last - tail[-1]) / 1_200)
    assert lead_in[-1] == pytest.approx(prompt_last)
    assert audio[0] - lead_in[-1] == pytest.approx(new[0] - tail[-1], abs=1e-6)
    np.testing.assert_array_equal(audio[48:], new[48:])
    # no step beyond the codec's own plus the jump's share per sample of lead-in or splice
    jump = prompt_last - tail[-1]
    steps = np.abs(np.diff(np.concatenate([lead_in, audio])))
    assert steps.max() <= np.abs(np.diff(decoded)).max() + abs(jump) / 48 + 1e-6


def test_crossfade_join_keeps_length_power_and_both_ends() -> None:
    rng = np.random.default_rng(0)
    prompt = rng.standard_normal(4_000).astype(np.float32)
    lead_in = rng.standard_normal(1_000).astype(np.float32)  # uncorrelated with the prompt
    audio = rng.standard_normal(3_000).astype(np.float32)
    joined = crossfade_join(prompt, lead_in, audio)
    assert joined.dtype == np.float32 and len(joined) == 7_000
    np.testing.assert_array_equal(joined[:3_000], prompt[:3_000])
    np.testing.assert_array_equal(joined[4_000:], audio)
    assert joined[3_999] == pytest.approx(lead_in[-1])  # the codec alone at the seam
    # equal power: uncorrelated halves keep the level through the fade (within noise)
    assert np.mean(joined[3_000:4_000] ** 2) == pytest.approx(1.0, rel=0.15)
    np.testing.assert_array_equal(crossfade_join(prompt, lead_in[:0], audio),
                                  np.concatenate([prompt, audio]))
    with pytest.raises(ValueError, match="lead-in of 1000 samples is longer than the prompt"):
        crossfade_join(prompt[:500], lead_in, audio)
