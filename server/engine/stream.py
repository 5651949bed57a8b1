"""One continuation as a stream: tokens and audio made block by block, state passed explicitly.

`TokenStream` holds the loaded pipeline (codec, semantic tokenizer, three stages) and nothing
per job; a job's whole state is its `StreamState`. `start` encodes the prompt and warms the
streaming decoder on the prompt's last frames; each `advance` adds `n_semantic` semantic frames
(3 codec frames each) through the three stages, conditioned on a bounded window of everything
before them (the prompt, then what was generated: in loop mode the music feeds back into its
own prompt window this way, as tokens), and returns the audio that is now final. The streaming
decoder overlaps its decodes (`tokenizers.streaming`), so block seams match a whole decode; it
holds the last `holdback_frames` back until the next block brings the frames after them.

The first audio out starts exactly at the prompt's end, hard-join ready (`seam.codec_join`),
and the codec's rendering of the prompt's last CROSSFADE_S comes with it as `lead_in`.
Sampling settings may change from one block to the next (`sampling`: a preset); the seeded
generator runs on, so the same seed, blocks and settings give the same audio.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from continuo.server.continuation import Continuation
from continuo.server.presets import Preset
from continuo.server.seam import CROSSFADE_S, SPLICE_S, codec_join
from continuo.server.tokenizers.codec import EncodedAudio
from continuo.server.tokenizers.streaming import (
    StreamingConfig,
    StreamingDecoder,
    StreamingState,
)

# Our small codec's decoder is not causal: 8 frames of lookahead keep block seams within 1e-3 of
# a whole decode (tests/test_small_codec.py); 32 frames of left context warm its state.
STREAMING = StreamingConfig(context_frames=32, crossfade_frames=1, lookahead_frames=8)


@dataclass(frozen=True)
class StreamContext:
    """How far back each acoustic stage looks when it continues a block, in semantic frames
    (25 per second); the semantic stage sees the whole window (the job's context_s). The coarse
    and fine stages are local (acoustic detail), and every position they re-read costs a
    prefill per block: measured per 3-frame block on 2 cores, coarse 200 → 34 ms and fine
    83 → 31 ms going from 5 s of context to these."""

    coarse_semantic_frames: int = 50  # 2 s
    fine_semantic_frames: int = 5  # 0.2 s


@dataclass(frozen=True)
class StreamState:
    """Where one stream stands.

    semantic [1, S] and codes [1, K, 3S]: the window of tokens the next block continues (the
    prompt's, then generated ones; at most context_s long). scale: the codec's scale of the
    prompt (None for codecs that do not normalise). decoder: the streaming decoder's state.
    skip_samples: decoded prompt audio still to come out of the decoder (dropped, kept in
    `tail` for the lead-in). prompt_last: the prompt's last sample. emitted: continuation
    samples returned so far. generator: the job's seeded sampling generator (mutated by each
    advance: a stream's states are used in order, once)."""

    semantic: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor | None
    decoder: StreamingState
    skip_samples: int
    tail: np.ndarray
    prompt_last: float
    emitted: int
    context_s: float
    generator: torch.Generator


@dataclass(frozen=True)
class Block:
    """What one advance made: audio [T] (mono, final), lead_in [L] with the first audio only."""

    audio: np.ndarray
    lead_in: np.ndarray | None
    n_semantic: int


class TokenStream:
    """Streams continuations of one loaded pipeline; see the module doc."""

    def __init__(self, pipeline: Continuation, streaming: StreamingConfig = STREAMING,
                 context: StreamContext | None = None) -> None:
        self.pipeline = pipeline
        self.decoder = StreamingDecoder(pipeline.tokenizers.codec, streaming)
        self.context = context or StreamContext()

    @property
    def sample_rate(self) -> int:
        return self.pipeline.sample_rate

    @property
    def semantic_hop_samples(self) -> int:
        return self.pipeline.semantic_hop_samples

    @property
    def _codes_samples(self) -> int:
        """Prompt samples worth encoding with the codec: what the coarse stage looks back on
        (the codec's encoder costs ~30 ms per second of prompt on 2 cores)."""
        return self.context.coarse_semantic_frames * self.semantic_hop_samples

    @property
    def _lead_samples(self) -> int:
        return round(CROSSFADE_S * self.sample_rate)

    @property
    def holdback_samples(self) -> int:
        return self.decoder.config.holdback_frames * self.pipeline.tokenizers.codec.hop_length

    def start(self, audio: np.ndarray, sample_rate: int, seed: int,
              context_s: float) -> StreamState:
        """A prompt [T] at sample_rate → the state before the first block. AudioError when the
        prompt is not usable audio."""
        prompt = self.pipeline.prepare_prompt(audio, sample_rate, context_s)
        with torch.inference_mode():
            semantic, codes, scale = self.pipeline.encode_prompt(prompt, self._codes_samples)
            config = self.decoder.config
            warm = min(codes.shape[2], config.context_frames + config.holdback_frames)
            out, decoder = self.decoder.step(self.decoder.start(),
                                             EncodedAudio(codes[:, :, -warm:], scale))
        hop = self.pipeline.tokenizers.codec.hop_length
        skip = (decoder.received_frames - decoder.emitted_frames) * hop
        return StreamState(semantic, codes, scale, decoder, skip,
                           _mono(out)[-self._lead_samples:],
                           float(prompt[-1]), 0, context_s,
                           torch.Generator().manual_seed(int(seed)))

    def frames_for(self, state: StreamState, n_samples: int) -> int:
        """Semantic frames the next advance needs so that at least n_samples more continuation
        samples come out."""
        need = n_samples + state.skip_samples
        if state.decoder.received_frames == state.decoder.emitted_frames:
            need += self.holdback_samples
        return max(1, -(-need // self.semantic_hop_samples))

    def advance(self, state: StreamState, n_semantic: int,
                sampling: Preset | None = None) -> tuple[Block, StreamState]:
        """Add n_semantic semantic frames (and their 3 codec frames each) → the audio now final
        and the next state. sampling: the preset whose per-stage sampling to use."""
        with torch.inference_mode():
            semantic, new = self._tokens(state, n_semantic, sampling)
            out, decoder = self.decoder.step(state.decoder, EncodedAudio(new, state.scale))
        codes = torch.cat([state.codes, new], dim=2)
        audio = _mono(out)
        skip = min(state.skip_samples, len(audio))
        tail = np.concatenate([state.tail, audio[:skip]])[-self._lead_samples:]
        audio, lead_in = audio[skip:], None
        if state.emitted == 0 and len(audio):  # the first continuation samples: the seam
            lead_in, audio = codec_join(state.prompt_last, tail, audio,
                                        round(SPLICE_S * self.sample_rate))
        semantic, codes = self._window(semantic, codes, state.context_s)
        state = replace(state, semantic=semantic, codes=codes, decoder=decoder,
                        skip_samples=state.skip_samples - skip, tail=tail,
                        emitted=state.emitted + len(audio))
        return Block(audio, lead_in, n_semantic), state

    def _tokens(self, state: StreamState, n_new: int,
                sampling: Preset | None) -> tuple[torch.Tensor, torch.Tensor]:
        """→ semantic [1, S + n_new] (all of the window) and the new codes [1, K, 3 n_new]."""
        pipe, gen = self.pipeline, state.generator
        per = pipe.tokenizers.frames_per_semantic
        semantic = pipe.extend_semantic(state.semantic, n_new, gen, sampling)
        n_c = min(state.semantic.shape[1], self.context.coarse_semantic_frames,
                  state.codes.shape[2] // per)
        known = state.codes[:, :, state.codes.shape[2] - n_c * per:]
        coarse = pipe.extend_coarse(semantic[:, -(n_c + n_new):], known, (n_c + n_new) * per,
                                    gen, sampling)
        n_f = min(n_c, self.context.fine_semantic_frames) * per
        codes = pipe.extend_fine(coarse[:, :, coarse.shape[2] - n_f - n_new * per:],
                                 known[:, :, known.shape[2] - n_f:], gen, sampling)
        return semantic, codes[:, :, n_f:]

    def _window(self, semantic: torch.Tensor, codes: torch.Tensor,
                context_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The last context_s seconds of semantic tokens and the codes the coarse stage looks
        back on, in whole semantic frames."""
        keep = max(1, round(context_s * self.sample_rate) // self.semantic_hop_samples)
        per = self.pipeline.tokenizers.frames_per_semantic
        keep_codes = min(keep, self.context.coarse_semantic_frames) * per
        return semantic[:, -keep:], codes[:, :, max(codes.shape[2] - keep_codes, 0):]


def _mono(audio: torch.Tensor) -> np.ndarray:
    """[1, C, T] → mono float32 [T]."""
    return audio[0].mean(dim=0).float().cpu().numpy()
