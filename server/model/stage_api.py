"""What a stage offers the trainer and the generator: the contract between model and training.

A `TokenWindow` is an aligned slice of one clip's tokens: semantic tokens at the semantic rate
(25 Hz) and the codec's codes at its frame rate (75 Hz), covering the same seconds. Each stage
turns a window into one training example (`example`) — the paper's conditioning: the semantic
LM sees semantic tokens; the coarse LM semantic tokens then the first Q' codebooks; the fine LM
coarse codebooks then the rest — knows its decoder's config, and builds the model that reads its
examples (`build_model`: logits [B, T, V] for inputs [B, T], or per-level logits [B, K, T, V]
for delay columns [B, R, T]; either way the loss is cross-entropy of logits [..., V] against
targets [...]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from continuo.server.model.decoder import DecoderConfig

IGNORE_INDEX = -100  # targets that carry no loss (conditioning, padding)


@dataclass(frozen=True)
class TokenWindow:
    """semantic [S] int64 (S = seconds × semantic rate); acoustic [K, F] int64 (all codebooks,
    F = seconds × codec frame rate). Both start at the same instant."""

    semantic: torch.Tensor
    acoustic: torch.Tensor


@dataclass(frozen=True)
class TrainingExample:
    """inputs [T] int64 token ids of the stage's shared vocabulary; targets [T] int64, the next
    token for each input position or IGNORE_INDEX where no loss is taken. Delay layout: inputs
    [R, T] token columns and targets [K, T] level codes (one row per predicted level)."""

    inputs: torch.Tensor
    targets: torch.Tensor


@runtime_checkable
class Stage(Protocol):
    """One AudioLM stage: semantic, coarse or fine."""

    name: str

    @property
    def decoder_config(self) -> DecoderConfig: ...

    def build_model(self) -> nn.Module:
        """A fresh model (random weights from torch's RNG) that reads this stage's examples."""
        ...

    def example(self, window: TokenWindow) -> TrainingExample:
        """The training example of one window (the stage's own conditioning and layout)."""
        ...
