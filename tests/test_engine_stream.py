"""TokenStream through the tiny model folder (tiny random codec, tiny fitted semantic tokenizer,
stages trained a few steps): block lengths, the seam's lead-in, streaming equals a whole decode,
seeds, and the bounded token window of a long (loop-mode) stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from continuation_fixtures import (  # noqa: F401 (fixtures)
    data_root,
    model_dir_fixture,
    write_preset,
)

from continuo.server.continuation import Continuation
from continuo.server.engine.stream import Block, StreamState, TokenStream
from continuo.server.tokenizers.codec import EncodedAudio

SR = 24000
HOP = 320  # codec frame: 3 per semantic frame of 960 samples
LEAD_SAMPLES = 1200  # seam.CROSSFADE_S = 50 ms
SPLICE_SAMPLES = 48  # seam.SPLICE_S = 2 ms


@pytest.fixture(scope="module")
def stream(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenStream:
    return TokenStream(Continuation(write_preset(tmp_path_factory.mktemp("preset"), model_dir)))


@pytest.fixture(scope="module")
def prompt(data_root: Path) -> np.ndarray:  # noqa: F811
    """1 s of rendered piano from the held-out piece (24 kHz, the codec's rate)."""
    audio, rate = sf.read(data_root / "valid" / "c.flac", dtype="float32")
    assert rate == SR
    return audio[SR: 2 * SR]


def run(stream: TokenStream, state: StreamState, asks: list[int]) -> tuple[list[Block],
                                                                           StreamState]:
    """Advance once per ask (samples wanted), each by `frames_for` that many."""
    blocks = []
    for ask in asks:
        block, state = stream.advance(state, stream.frames_for(state, ask))
        assert len(block.audio) >= ask  # frames_for asked for enough
        blocks.append(block)
    return blocks, state


def test_blocks_are_as_long_as_asked_and_add_up_to_emitted(stream: TokenStream,
                                                           prompt: np.ndarray) -> None:
    state = stream.start(prompt, SR, seed=1, context_s=0.5)
    assert state.emitted == 0 and state.semantic.shape == (1, 11)  # 12, the last to be remade
    asks = [1000, 5000, 1, 2880]
    blocks, state = run(stream, state, asks)
    audio = np.concatenate([b.audio for b in blocks])
    assert audio.dtype == np.float32 and len(audio) == state.emitted
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert [b.lead_in is not None for b in blocks] == [True, False, False, False]
    assert all(b.n_semantic >= 1 for b in blocks)
    # nothing is made twice: what came out plus what is held back is all the frames made but
    # the remade prompt frame (prompt time: heard only in the lead-in)
    made_frames = 3 * sum(b.n_semantic for b in blocks)
    held = stream.holdback_samples + state.skip_samples
    assert state.emitted + held == (made_frames - 3) * HOP



def test_the_first_block_leads_in_from_the_prompt_and_streaming_equals_a_whole_decode(
    stream: TokenStream, prompt: np.ndarray
) -> None:
    # context 30 s: the window keeps every token, so state.codes is prompt + continuation
    state = stream.start(prompt, SR, seed=2, context_s=30)
    n_kept = state.codes.shape[2]
    assert n_kept == 72  # 1 s = 25 semantic frames of 3 codec frames, the last to be remade
    blocks, state = run(stream, state, [2000, 3000, 4000, 500, 6000])
    audio = np.concatenate([b.audio for b in blocks])
    assert state.codes.shape[2] == n_kept + 3 * sum(b.n_semantic for b in blocks)
    codec = stream.pipeline.tokenizers.codec
    whole = codec.decode(EncodedAudio(state.codes, state.scale))[0].mean(dim=0).numpy()
    seam = (n_kept + 3) * HOP  # the audio starts where the prompt ends
    reference = whole[seam: seam + len(audio)]
    peak = float(np.abs(reference).max())
    assert peak > 0 and len(whole) >= seam + len(audio)
    # blocks decoded with 32 frames of context and 8 of lookahead match one whole decode
    # (measured 1.1e-4 of the peak; the first 48 samples are the splice onto the prompt)
    error = np.abs(audio[SPLICE_SAMPLES:] - reference[SPLICE_SAMPLES:]).max()
    assert error <= 1e-3 * peak
    # lead-in: the codec's rendering of the prompt's last 50 ms, ramped to end exactly on the
    # prepared prompt's last sample
    lead_in = blocks[0].lead_in
    assert lead_in is not None and lead_in.shape == (LEAD_SAMPLES,)
    prepared = stream.pipeline.prepare_prompt(prompt, SR, 30)
    assert lead_in[-1] == pytest.approx(prepared[-1], abs=1e-7)
    jump = float(prepared[-1] - whole[seam - 1])
    ramp = jump * np.arange(1, LEAD_SAMPLES + 1) / LEAD_SAMPLES
    np.testing.assert_allclose(lead_in, whole[seam - LEAD_SAMPLES: seam] + ramp,
                               atol=1e-3 * peak)
    # lead_in ++ audio steps no more than the codec's own output there, but for the jump's
    # share per sample of the splice; the step across the seam is the codec's own
    own = np.abs(np.diff(whole[seam - LEAD_SAMPLES: seam + len(audio)]))
    joined = np.abs(np.diff(np.concatenate([lead_in, audio])))
    assert abs(jump) > own.max()  # the tiny codec is far off the prompt: a butt join clicks
    assert joined.max() <= own.max() + abs(jump) / SPLICE_SAMPLES + 1e-3 * peak
    assert audio[0] - lead_in[-1] == pytest.approx(whole[seam] - whole[seam - 1],
                                                   abs=1e-3 * peak)
    assert audio[0] - prepared[-1] == pytest.approx(audio[0] - lead_in[-1], abs=1e-7)


def _audio(stream: TokenStream, prompt: np.ndarray, seed: int,
           asks: list[int]) -> tuple[np.ndarray, StreamState]:
    blocks, state = run(stream, stream.start(prompt, SR, seed=seed, context_s=0.5), asks)
    return np.concatenate([b.audio for b in blocks]), state


def test_same_seed_and_blocks_same_audio_other_seed_other_audio(stream: TokenStream,
                                                                prompt: np.ndarray) -> None:
    asks = [3000, 960, 4000]
    a, state_a = _audio(stream, prompt, 5, asks)
    again, state_again = _audio(stream, prompt, 5, asks)
    np.testing.assert_array_equal(a, again)
    assert torch.equal(state_a.codes, state_again.codes)
    assert torch.equal(state_a.semantic, state_again.semantic)
    b, state_b = _audio(stream, prompt, 6, asks)
    assert len(b) == len(a) and not torch.equal(state_a.codes, state_b.codes)
    # beyond the splice (where both start from the prompt's last sample) the music differs,
    # not just the rounding: measured 10% of the peak with the tiny codec
    assert np.abs(a - b)[SPLICE_SAMPLES:].max() > 0.02 * np.abs(a[SPLICE_SAMPLES:]).max()


def test_a_long_stream_keeps_a_bounded_window(stream: TokenStream, prompt: np.ndarray) -> None:
    state = stream.start(prompt, SR, seed=3, context_s=0.5)  # 0.5 s: 12 semantic frames
    assert state.semantic.shape == (1, 11) and state.codes.shape == (1, 4, 33)  # 1 to remake
    prompt_codes = state.codes.clone()
    blocks, state = run(stream, state, [2880] * 8)
    new_semantic = sum(b.n_semantic for b in blocks)
    assert new_semantic > 24  # over twice the window went through it
    assert state.semantic.shape[1] <= 13
    assert state.codes.shape == (1, 4, 3 * state.semantic.shape[1])
    assert not any(  # the prompt's codes have left the window
        (state.codes[..., i: i + 33] == prompt_codes).all()
        for i in range(state.codes.shape[2] - 32))
    assert state.emitted == sum(len(b.audio) for b in blocks) >= 8 * 2880
