"""The acoustic codec: audio [B, C, T] ⇄ codes [B, K, F].

`AcousticCodec` is the contract every codec meets (EnCodec 24/48 kHz, our small codec), so the
stages, the streaming decoder and the benchmarks never care which one is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class EncodedAudio:
    """Codes of a batch of clips, with the loudness each was normalised by (if any).

    codes: [B, K, F] int64, K codebooks, F frames.
    scale: [B, 1] float32 RMS the input was divided by before encoding, or None when the codec
        does not normalise; decoding multiplies it back.
    """

    codes: torch.Tensor
    scale: torch.Tensor | None = None


@runtime_checkable
class AcousticCodec(Protocol):
    """What every acoustic codec offers. Rates are exact: hop_length samples per frame."""

    sample_rate: int
    channels: int
    hop_length: int  # samples per frame
    codebook_size: int
    n_codebooks: int  # codebooks used by encode (set by the bandwidth)

    @property
    def frame_rate(self) -> float: ...

    def encode(self, audio: torch.Tensor) -> EncodedAudio:
        """audio [B, C, T] float in [-1, 1] → codes [B, K, F], F = ceil(T / hop_length)."""
        ...

    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """codes [B, K, F] → audio [B, C, F * hop_length]."""
        ...
