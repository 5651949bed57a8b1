"""Streaming decode: code chunks [B, K, f] in, audio out, seams matching a whole-stream decode.

Each step decodes the new frames together with `context_frames` frames before them, so the
decoder's convolutions and LSTM start from the same past as in a whole-stream decode, and keeps
the audio of the last `crossfade_frames` frames back: the next step fades from that audio into
its own decode of the same frames, so a seam never jumps. A non-causal decoder also needs right
context: `lookahead_frames` more frames are held back until the next chunk (or `finish`) brings
the frames after them. Latency = (lookahead_frames + crossfade_frames) frames.

    frames      ... e-C ........ e ...... e+X ..... r-L ....... r
    decode          [context C   |  new frames                   ]
    emitted                      [fade X][  ...   ]
    held back                                     [X: next fade][L]

    e: frames emitted so far, r: frames received, C: context, X: crossfade, L: lookahead.

State is explicit (`StreamingState`, owned by the caller, one per stream); the decoder itself
holds only the codec and the config, so one decoder serves any number of streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from continuo.server.errors import ConfigError
from continuo.server.tokenizers.codec import AcousticCodec, EncodedAudio


@dataclass(frozen=True)
class StreamingConfig:
    """How much a streaming decode overlaps, in codec frames.

    Defaults suit the causal 24 kHz EnCodec (75 frames/s). Its error against a whole-stream
    decode, measured on 6 s of rendered piano in 0.5 s chunks (random weights, max |error| over
    the peak, no crossfade): context 0 frames 0.6, 4 frames 6e-4, 8 frames 1e-4, 16 frames 3e-6,
    32 or more 2e-6 (float32 rounding). 32 frames (0.43 s) leave room for a trained decoder's
    LSTM remembering longer than a random one. One frame of crossfade (13 ms of latency) turns
    whatever step is left at a seam into a fade (without context it cuts the error 0.6 → 4e-3).
    Non-causal codecs need `lookahead_frames` (EnCodec 48 kHz: 8 frames, see `EncodecCodec`).
    """

    context_frames: int = 32
    crossfade_frames: int = 1
    lookahead_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("context_frames", "crossfade_frames", "lookahead_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"streaming {name} must be a whole number >= 0, got {value!r}")

    @property
    def holdback_frames(self) -> int:
        """Frames received but not yet emitted at the end of each step (the latency)."""
        return self.lookahead_frames + self.crossfade_frames


@dataclass(frozen=True)
class StreamingState:
    """Where one stream stands. Frame numbers count from the start of the stream.

    codes: [B, K, n] the frames from `codes_start_frame` to `received_frames` (context and
        held-back frames), or None before the first chunk.
    pending: [B, C, crossfade_frames * hop] the audio of the frames after `emitted_frames`,
        to be faded into the next decode; None until there is one.
    scale: [B, 1] of the last chunk (normalising codecs), else None.
    """

    codes: torch.Tensor | None = None
    codes_start_frame: int = 0
    received_frames: int = 0
    emitted_frames: int = 0
    pending: torch.Tensor | None = None
    scale: torch.Tensor | None = None


class StreamingDecoder:
    """Decodes a code stream chunk by chunk with any `AcousticCodec`.

    state = decoder.start()
    for chunk in chunks:                      # EncodedAudio, codes [B, K, f]
        audio, state = decoder.step(state, chunk)   # [B, C, n * hop], n may be 0
    audio, state = decoder.finish(state)      # the held-back frames

    The pieces concatenated have the length of a whole decode, F * hop_length samples.
    """

    def __init__(self, codec: AcousticCodec, config: StreamingConfig | None = None) -> None:
        self.codec = codec
        self.config = config if config is not None else StreamingConfig()

    def start(self) -> StreamingState:
        return StreamingState()

    def step(
        self, state: StreamingState, chunk: EncodedAudio
    ) -> tuple[torch.Tensor, StreamingState]:
        """Add the frames of `chunk` (codes [B, K, f]); return the audio now final."""
        new = chunk.codes
        if state.codes is not None and new.shape[:2] != state.codes.shape[:2]:
            raise ValueError(
                f"chunk codes {list(new.shape)} do not continue a stream of "
                f"{list(state.codes.shape[:2])} [B, K]"
            )
        codes = new if state.codes is None else torch.cat([state.codes, new], dim=-1)
        received = state.received_frames + new.shape[-1]
        state = replace(state, codes=codes, received_frames=received, scale=chunk.scale)
        settled = received - self.config.lookahead_frames
        # Something to emit after keeping the crossfade back (always, once a fade is pending).
        has_room = settled - state.emitted_frames > self.config.crossfade_frames
        if new.shape[-1] == 0 or not has_room:
            return self._silence(codes), state
        return self._emit(state, settled, final=False)

    def finish(self, state: StreamingState) -> tuple[torch.Tensor, StreamingState]:
        """Decode and return everything held back; the stream ends here."""
        if state.codes is None:
            return torch.zeros(0, self.codec.channels, 0), state
        if state.received_frames == state.emitted_frames:
            return self._silence(state.codes), state
        return self._emit(state, state.received_frames, final=True)

    def _emit(
        self, state: StreamingState, settled: int, *, final: bool
    ) -> tuple[torch.Tensor, StreamingState]:
        """Decode context + frames, fade in `pending`, emit up to `settled` (less the fade)."""
        assert state.codes is not None
        hop, start = self.codec.hop_length, state.emitted_frames
        window_start = max(state.codes_start_frame, start - self.config.context_frames)
        window = state.codes[..., window_start - state.codes_start_frame :]
        audio = self.codec.decode(EncodedAudio(window, state.scale))
        current = audio[..., (start - window_start) * hop : (settled - window_start) * hop]
        if state.pending is not None:
            current = _fade_in(state.pending, current)
        emit_end = settled if final else settled - self.config.crossfade_frames
        keep_from = max(window_start, emit_end - self.config.context_frames)
        state = replace(
            state,
            codes=state.codes[..., keep_from - state.codes_start_frame :],
            codes_start_frame=keep_from,
            emitted_frames=emit_end,
            pending=None if final or self.config.crossfade_frames == 0
            else current[..., (emit_end - start) * hop :],
        )
        return current[..., : (emit_end - start) * hop], state

    def _silence(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.zeros(codes.shape[0], self.codec.channels, 0, device=codes.device)


def _fade_in(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """new [B, C, T] with its first old.shape[-1] samples faded from old (equal-gain, sin²)."""
    n = old.shape[-1]
    t = (torch.arange(n, device=new.device, dtype=new.dtype) + 0.5) / n
    w = torch.sin(0.5 * math.pi * t) ** 2  # 0 → 1; old gets 1 - w = cos²
    head = old * (1 - w) + new[..., :n] * w
    return torch.cat([head, new[..., n:]], dim=-1)
