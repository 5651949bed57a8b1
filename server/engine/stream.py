"""One continuation as a stream: tokens and audio made block by block, state passed explicitly.

`TokenStream` holds the loaded pipeline (codec, semantic tokenizer, three stages) and nothing
per job; a job's whole state is its `StreamState`. `start` encodes the prompt and warms the
streaming decoder on the prompt's last frames; each `advance` adds `n_semantic` semantic frames
(3 codec frames each) through the three stages, conditioned on a bounded window of everything
before them (the prompt, then what was generated: in loop mode the music feeds back into its
own prompt window this way, as tokens), and returns the audio that is now final. The streaming
decoder overlaps its decodes (`tokenizers.streaming`), so block seams match a whole decode; it
holds the last `holdback_frames` back until the next block brings the frames after them.
`advance_many` advances several jobs' streams at once: each stage decodes all of them in one
batch (the engine's way of serving many jobs), and each gets the audio it would get alone.

The first audio out starts exactly at the prompt's end, hard-join ready (`seam.codec_join`),
and the codec's rendering of the prompt's last CROSSFADE_S comes with it as `lead_in`. As
offline, the prompt's last semantic frame is remade rather than continued from
(`continuation.drop_edge`): its audio is prompt time, heard only in the lead-in.
Sampling settings may change from one block to the next (`sampling`: a preset); the seeded
generator runs on (on the pipeline's device), so the same seed, blocks and settings give the
same audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from continuo.server.continuation import Continuation, drop_edge
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
        per = self.pipeline.tokenizers.frames_per_semantic
        with torch.inference_mode():
            semantic, codes, scale = self.pipeline.encode_prompt(prompt, self._codes_samples)
            semantic, codes, edge = drop_edge(semantic, codes, per)  # remade before the seam
            config = self.decoder.config
            warm = min(codes.shape[2], config.context_frames + config.holdback_frames)
            out, decoder = self.decoder.step(self.decoder.start(),
                                             EncodedAudio(codes[:, :, -warm:], scale))
        hop = self.pipeline.tokenizers.codec.hop_length
        # prompt time still to come out of the decoder: its held-back frames, the remade edge
        skip = (decoder.received_frames - decoder.emitted_frames + edge * per) * hop
        # On the pipeline's device, so sampling stays there (for one seed a CUDA generator's
        # numbers differ from a CPU one's: the same seed gives other music on a GPU).
        generator = torch.Generator(device=self.pipeline.device).manual_seed(int(seed))
        return StreamState(semantic, codes, scale, decoder, skip,
                           _mono(out)[-self._lead_samples:],
                           float(prompt[-1]), 0, context_s, generator)

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
        return self.advance_many([state], [n_semantic], [sampling])[0]

    def advance_many(self, states: Sequence[StreamState], n_semantic: Sequence[int],
                     samplings: Sequence[Preset | None]) -> list[tuple[Block, StreamState]]:
        """`advance` for several streams (jobs) at once: each stage decodes all of them in one
        batch (rows of their own lengths, params and generators); each stream's tokens and
        audio are those it would get alone. The codec decodes stream by stream (each has its
        own streaming state)."""
        with torch.inference_mode():
            tokens = self._tokens(states, n_semantic, samplings)
            decoded = [self.decoder.step(state.decoder, EncodedAudio(new, state.scale))
                       for state, (_, new) in zip(states, tokens, strict=True)]
        return [self._block(state, n, semantic, new, out, decoder)
                for state, n, (semantic, new), (out, decoder)
                in zip(states, n_semantic, tokens, decoded, strict=True)]

    def _block(self, state: StreamState, n_semantic: int, semantic: torch.Tensor,
               new: torch.Tensor, out: torch.Tensor, decoder: StreamingState
               ) -> tuple[Block, StreamState]:
        """One stream's new tokens and decoded audio → its Block and next state."""
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

    def _tokens(self, states: Sequence[StreamState], n_new: Sequence[int],
                samplings: Sequence[Preset | None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per stream: semantic [1, S + n_new] (all of the window) and the new codes
        [1, K, 3 n_new]; each stage runs once for all streams."""
        pipe, gens = self.pipeline, [state.generator for state in states]
        per = pipe.tokenizers.frames_per_semantic
        semantic = pipe.extend_semantic_rows([state.semantic[0] for state in states], n_new,
                                             gens, samplings)
        n_c = [min(state.semantic.shape[1], self.context.coarse_semantic_frames,
                   state.codes.shape[2] // per) for state in states]
        known = [state.codes[0, :, state.codes.shape[2] - n * per:]
                 for state, n in zip(states, n_c, strict=True)]
        coarse = pipe.extend_coarse_rows(
            [sem[-(n + m):] for sem, n, m in zip(semantic, n_c, n_new, strict=True)], known,
            [(n + m) * per for n, m in zip(n_c, n_new, strict=True)], gens, samplings)
        n_f = [min(n, self.context.fine_semantic_frames) * per for n in n_c]
        codes = pipe.extend_fine_rows(
            [co[:, co.shape[1] - f - m * per:]
             for co, f, m in zip(coarse, n_f, n_new, strict=True)],
            [k[:, k.shape[1] - f:] for k, f in zip(known, n_f, strict=True)], gens, samplings)
        return [(sem[None], c[None, :, f:]) for sem, c, f in zip(semantic, codes, n_f, strict=True)]

    def _window(self, semantic: torch.Tensor, codes: torch.Tensor,
                context_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The last context_s seconds of semantic tokens and the codes the coarse stage looks
        back on, in whole semantic frames."""
        keep = max(1, round(context_s * self.sample_rate) // self.semantic_hop_samples)
        per = self.pipeline.tokenizers.frames_per_semantic
        keep_codes = min(keep, self.context.coarse_semantic_frames) * per
        return semantic[:, -keep:], codes[:, :, max(codes.shape[2] - keep_codes, 0):]


def _mono(audio: torch.Tensor) -> np.ndarray:
    """[1, C, T] (on the pipeline's device) → mono float32 [T] on the host: the one place a
    stream's audio leaves the device (downmixed there first, so one channel crosses)."""
    return audio[0].mean(dim=0).float().cpu().numpy()
