"""The three AudioLM stages: what each decoder reads, what it predicts, how it continues a prompt.

    semantic  s0 s1 s2 …                                   predicts every next semantic token
    coarse    s0 … sS-1 SEP | Q' coarse levels (layout)    predicts the coarse codes
    fine      Q' coarse levels of the window SEP | fine    predicts the fine codes, window by window

Every stream lives in its own slice of the stage's vocabulary (`stage_config.Vocab`). `example`
puts IGNORE_INDEX on every target that is conditioning (semantic tokens in the coarse stage,
coarse codes in the fine stage, SEP, delay pads), so the loss is only on what the stage predicts.

Layouts of the predicted codes (see layouts.py), K predicted levels, F frames:
- flat: one token per decoder position, levels interleaved per frame (the paper): F·K positions.
  The model is a plain `Decoder`; logits [B, T, vocab] and targets are shared-vocabulary ids.
- delay: one *column* per position (`ColumnDecoder`: the K tokens of a column are embedded and
  summed, K output projections predict them), MusicGen's delay pattern: F + K − 1 positions, so
  K times fewer decoder steps per frame. Conditioning is columns too: a semantic token (or SEP)
  in row 0 with PAD below it; in the fine stage a frame's Q' coarse codes in rows 0..Q'-1.
  Logits are [B, K, T, V] per level and targets [K, T] are level codes 0..V-1.
Either way `stage_loss(model(inputs), targets)` is the training loss, and `build_model()` the
model to train (inputs [B, T] for flat and semantic, [B, R, T] for delay).

Alignment: semantic token j covers acoustic frames 3j..3j+2 (25 Hz and 75 Hz from the same
instant). Generation continues exactly where the prompt ends: the new codes are frames P, P+1, …
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from continuo.server.errors import DataError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.generate import (
    ColumnIds,
    Params,
    decode_column_rows,
    decode_token_rows,
    window_rounds,
)
from continuo.server.model.layouts import (
    add_codebook_offsets,
    add_offset,
    delay,
    flatten,
    remove_offset,
    unflatten,
)
from continuo.server.model.sampling import Generators, pick_rows
from continuo.server.model.stage_api import IGNORE_INDEX, TokenWindow, TrainingExample
from continuo.server.model.stage_config import (
    AcousticStageConfig,
    CoarseStageConfig,
    FineStageConfig,
    SemanticStageConfig,
)


def stage_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions with a target: logits [..., V], targets [...]."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def _check_shape(x: torch.Tensor, shape: tuple[int | None, ...], what: str) -> None:
    if x.ndim == len(shape):
        ok = all(n is None or n == m for n, m in zip(shape, x.shape, strict=True))
    else:
        ok = False
    if not ok:
        want = ", ".join("*" if n is None else str(n) for n in shape)
        raise ValueError(f"{what} must have shape [{want}], got {tuple(x.shape)}")


class SemanticStage:
    """Semantic LM: semantic tokens [S] → the next ones."""

    name = "semantic"

    def __init__(self, config: SemanticStageConfig) -> None:
        self.config = config

    @property
    def decoder_config(self) -> DecoderConfig:
        return self.config.decoder

    def build_model(self) -> Decoder:
        return Decoder(self.config.decoder)

    def example(self, window: TokenWindow) -> TrainingExample:
        """The first window_s of the window's semantic tokens, each predicting the next."""
        tokens = window.semantic[: self.config.window_tokens]
        if tokens.ndim != 1 or tokens.shape[0] < 2:
            raise DataError(f"semantic window needs >= 2 tokens [S], got {tuple(tokens.shape)}")
        ids = add_offset(tokens, 0, self.config.vocab_size)
        return TrainingExample(inputs=ids[:-1], targets=ids[1:])

    def generate(
        self,
        model: Decoder,
        prompt: torch.Tensor,
        n_new: int,
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> torch.Tensor:
        """prompt [B, S] semantic tokens (S >= 1) → the continuation [B, n_new]."""
        _check_shape(prompt, (None, None), "semantic prompt [B, S]")
        rows = self.generate_rows(model, list(prompt), [n_new] * prompt.shape[0], params,
                                  generator)
        return torch.stack(rows) if rows else prompt.new_zeros(0, n_new)

    def generate_rows(
        self,
        model: Decoder,
        prompts: Sequence[torch.Tensor],
        n_new: Sequence[int],
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> list[torch.Tensor]:
        """B prompts [S_b] (lengths may differ, S_b >= 1) → row b's continuation [n_b], all rows
        in one batched decode; params and generator: one for all rows or one per row."""
        vocab = self.config.vocab_size
        allowed = [self.config.vocab.slice("semantic")] * max(n_new, default=0)
        new = decode_token_rows(model, [add_offset(p, 0, vocab) for p in prompts], allowed,
                                n_new, params or self.config.sampling, generator)
        return [remove_offset(t, 0, vocab) for t in new]


class _AcousticStage:
    """What coarse and fine share: conditioning, SEP, then K predicted levels (flat or delay).

    Subclasses say how their conditioning becomes tokens and columns and which stream they
    predict (`_predicted`).
    """

    name = "acoustic"
    _predicted = "coarse"

    def __init__(self, config: AcousticStageConfig) -> None:
        self.config = config

    @property
    def decoder_config(self) -> DecoderConfig:
        return self.config.decoder

    @property
    def n_levels(self) -> int:
        """Codebook levels this stage predicts."""
        raise NotImplementedError

    @property
    def n_rows(self) -> int:
        """Rows of a delay column (≥ n_levels; conditioning may need more)."""
        return self.n_levels

    def build_model(self) -> nn.Module:
        if self.config.layout == "flat":
            return Decoder(self.config.decoder)
        return ColumnDecoder(self.config.decoder, self.n_levels, self.config.codebook_size)

    def _condition_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        """Conditioning → [B, Tc] ids ending with SEP (flat layout)."""
        raise NotImplementedError

    def _condition_columns(self, cond: torch.Tensor) -> torch.Tensor:
        """Conditioning → [B, R, Tc] columns ending with the SEP column (delay layout)."""
        raise NotImplementedError

    def _column_ids(self) -> ColumnIds:
        vocab = self.config.vocab
        return ColumnIds(
            offset=vocab.offset(self._predicted), level_vocab=self.config.codebook_size,
            pad_id=vocab.id("pad"), n_rows=self.n_rows,
        )

    def _rows(self, columns: torch.Tensor) -> torch.Tensor:
        """[B, r, T] → [B, R, T], the missing rows PAD."""
        missing = self.n_rows - columns.shape[1]
        if missing <= 0:
            return columns
        pad = columns.new_full((columns.shape[0], missing, columns.shape[2]), self._pad_id)
        return torch.cat([columns, pad], dim=1)

    @property
    def _pad_id(self) -> int:
        return self.config.vocab.id("pad")

    def _delayed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] → delay columns [B, R, F + K - 1] of stream ids."""
        ids = add_codebook_offsets(codes, self.config.codebook_size)
        ids = ids + self.config.vocab.offset(self._predicted)
        return self._rows(delay(ids, self._pad_id))

    def _sequence(self, cond: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The whole sequence of conditioning and codes [B, K, F] (training), and the
        conditioning's length Tc (its positions carry no loss)."""
        if self.config.layout == "flat":
            head = self._condition_tokens(cond)
            tail = flatten(codes, self.config.codebook_size) + self.config.vocab.offset(
                self._predicted
            )
        else:
            head, tail = self._condition_columns(cond), self._delayed(codes)
        return torch.cat([head, tail], dim=-1), head.shape[-1]

    def _example(self, cond: torch.Tensor, codes: torch.Tensor) -> TrainingExample:
        """One unbatched example from cond and codes [K, F] (batched internally)."""
        seq, n_cond = self._sequence(cond[None], codes[None])
        seq = seq[0]
        if self.config.layout == "flat":
            targets = seq[1:].clone()
            targets[: n_cond - 1] = IGNORE_INDEX
        else:
            ignored = codes.new_full((self.n_levels, n_cond - 1), IGNORE_INDEX)
            targets = torch.cat([ignored, delay(codes[None], IGNORE_INDEX)[0]], dim=1)
        return TrainingExample(inputs=seq[..., :-1], targets=targets.long())

    def _decode_rows(
        self,
        model: nn.Module,
        conds: Sequence[torch.Tensor],
        known: Sequence[torch.Tensor],
        n_new: Sequence[int],
        params: Params,
        generator: Generators | None,
    ) -> list[torch.Tensor]:
        """Per row: its conditioning and known codes [K, P_b] → its next n_b frames [K, n_b];
        one batched decode for all rows."""
        size, offset = self.config.codebook_size, self.config.vocab.offset(self._predicted)
        if self.config.layout == "delay":
            prefixes = [
                torch.cat([self._condition_columns(c[None])[0],
                           self._delayed(k[None])[0, :, : k.shape[1]]], dim=-1)
                for c, k in zip(conds, known, strict=True)
            ]
            return decode_column_rows(model, prefixes, known, n_new, self._column_ids(), params,
                                      generator)
        prefixes = [
            torch.cat([self._condition_tokens(c[None])[0], flatten(k[None], size)[0] + offset])
            for c, k in zip(conds, known, strict=True)
        ]
        allowed = [
            (offset + k * size, offset + (k + 1) * size)
            for _ in range(max(n_new, default=0)) for k in range(self.n_levels)
        ]
        ids = decode_token_rows(model, prefixes, allowed, [n * self.n_levels for n in n_new],
                                params, generator)
        return [unflatten(i[None] - offset, self.n_levels, size)[0] for i in ids]


class CoarseStage(_AcousticStage):
    """Coarse LM: semantic tokens, SEP, the first Q' codebooks."""

    name = "coarse"
    _predicted = "coarse"
    config: CoarseStageConfig

    @property
    def n_levels(self) -> int:
        return self.config.n_coarse

    def _condition_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        c = self.config
        ids = add_offset(cond, c.vocab.offset("semantic"), c.semantic_vocab_size)
        sep = ids.new_full((ids.shape[0], 1), self.config.vocab.id("sep"))
        return torch.cat([ids, sep], dim=1)

    def _condition_columns(self, cond: torch.Tensor) -> torch.Tensor:
        return self._rows(self._condition_tokens(cond)[:, None, :])

    def example(self, window: TokenWindow) -> TrainingExample:
        """Up to window_s of aligned semantic tokens and coarse codes (whole semantic tokens)."""
        c = self.config
        acoustic = _acoustic(window, c.n_codebooks)
        n_sem = min(window.semantic.shape[0], acoustic.shape[1] // c.frames_per_semantic,
                    c.window_frames // c.frames_per_semantic)
        if window.semantic.ndim != 1 or n_sem < 1:
            raise DataError(
                f"coarse window needs aligned semantic [S] and acoustic [K, F] covering at least "
                f"one semantic token, got {tuple(window.semantic.shape)} and "
                f"{tuple(acoustic.shape)}"
            )
        frames = n_sem * c.frames_per_semantic
        dropped = c.semantic_dropout > 0 and torch.rand(()).item() < c.semantic_dropout
        return self._example(window.semantic[: 0 if dropped else n_sem],
                             acoustic[: c.n_coarse, :frames])

    def generate(
        self,
        model: nn.Module,
        semantic: torch.Tensor | None,
        prompt: torch.Tensor,
        n_new: int | None = None,
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> torch.Tensor:
        """semantic [B, S] (prompt + continuation), prompt codes [B, Q', P] → coarse codes of
        frames P .. P + n_new - 1, [B, Q', n_new]. n_new defaults to every frame the semantic
        tokens cover (S · 3 − P). semantic None: acoustic tokens alone (the ablation; needs
        n_new, and a stage trained with semantic_dropout to be meaningful)."""
        if semantic is None:
            if n_new is None:
                raise ValueError("acoustic-only coarse generation needs n_new")
            rows = [None] * prompt.shape[0]
        else:
            _check_shape(semantic, (None, None), "semantic [B, S]")
            covered = semantic.shape[1] * self.config.frames_per_semantic
            n_new = covered - prompt.shape[-1] if n_new is None else n_new
            rows = list(semantic)
        _check_shape(prompt, (len(rows), self.n_levels, None), "coarse prompt [B, Q', P]")
        return torch.stack(self.generate_rows(model, rows, list(prompt), [n_new] * len(rows),
                                              params, generator))

    def generate_rows(
        self,
        model: nn.Module,
        semantic: Sequence[torch.Tensor | None],
        prompts: Sequence[torch.Tensor],
        n_new: Sequence[int],
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> list[torch.Tensor]:
        """Per row: semantic [S_b] (prompt + continuation; None: acoustic tokens alone, see
        `generate`) and prompt codes [Q', P_b] → the coarse codes of frames P_b .. P_b + n_b - 1,
        [Q', n_b]; one batched decode."""
        per = self.config.frames_per_semantic
        for s, p, n in zip(semantic, prompts, n_new, strict=True):
            _check_shape(p, (self.n_levels, None), "coarse prompt [Q', P]")
            if s is not None:
                _check_shape(s, (None,), "semantic [S]")
            if s is None and n < 0:
                raise ValueError(f"acoustic-only coarse generation needs n_new >= 0, got {n}")
            if s is not None and (n < 0 or p.shape[1] + n > s.shape[0] * per):
                raise ValueError(f"{p.shape[1]} prompt + {n} new coarse frames exceed the "
                                 f"{s.shape[0] * per} frames that {s.shape[0]} semantic tokens "
                                 "cover")
        conds = [p.new_zeros(0) if s is None else s for s, p in zip(semantic, prompts, strict=True)]
        return self._decode_rows(model, conds, prompts, n_new,
                                 params or self.config.sampling, generator)


def _acoustic(window: TokenWindow, n_codebooks: int) -> torch.Tensor:
    if window.acoustic.ndim != 2 or window.acoustic.shape[0] != n_codebooks:
        raise DataError(
            f"window acoustic codes must be [K={n_codebooks}, F], got "
            f"{tuple(window.acoustic.shape)}"
        )
    return window.acoustic


def fine_windows(
    n_known: int, n_total: int, window_frames: int, context_frames: int
) -> list[tuple[int, int, int]]:
    """The fine stage's windows (start, first new frame, end) that generate frames n_known ..
    n_total - 1: each window holds window_frames frames (fewer only if the clip is shorter),
    repeats at least context_frames known frames as its prompt, and ends where the next begins
    generating. E.g. (100, 400, 225, 75) → [(25, 100, 250), (175, 250, 400)].
    """
    if not 0 <= context_frames < window_frames:
        raise ValueError(f"context {context_frames} must be in [0, window {window_frames})")
    windows, done = [], n_known
    while done < n_total:
        start = max(0, min(done - context_frames, n_total - window_frames))
        end = min(start + window_frames, n_total)
        windows.append((start, done, end))
        done = end
    return windows


class FineStage(_AcousticStage):
    """Fine LM: a window's Q' coarse codebooks, SEP, its K − Q' fine codebooks."""

    name = "fine"
    _predicted = "fine"
    config: FineStageConfig

    @property
    def n_levels(self) -> int:
        return self.config.n_fine

    @property
    def n_rows(self) -> int:
        return max(self.config.n_coarse, self.config.n_fine)

    def _condition_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        ids = flatten(cond, self.config.codebook_size) + self.config.vocab.offset("coarse")
        sep = ids.new_full((ids.shape[0], 1), self.config.vocab.id("sep"))
        return torch.cat([ids, sep], dim=1)

    def _condition_columns(self, cond: torch.Tensor) -> torch.Tensor:
        ids = add_codebook_offsets(cond, self.config.codebook_size)
        ids = ids + self.config.vocab.offset("coarse")  # [B, Q', F]: one column per frame
        sep = ids.new_full((ids.shape[0], 1, 1), self.config.vocab.id("sep"))
        return torch.cat([self._rows(ids), self._rows(sep)], dim=2)

    def example(self, window: TokenWindow) -> TrainingExample:
        """The first window_s of the window's codes: coarse conditioning, fine predicted."""
        acoustic = _acoustic(window, self.config.n_codebooks)[:, : self.config.window_frames]
        if acoustic.shape[1] < 1:
            raise DataError("fine window needs at least one acoustic frame")
        q = self.config.n_coarse
        return self._example(acoustic[:q], acoustic[q:])

    def generate(
        self,
        model: nn.Module,
        coarse: torch.Tensor,
        prompt: torch.Tensor,
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> torch.Tensor:
        """coarse [B, Q', F] (prompt + continuation), prompt fine codes [B, K − Q', P] → the
        fine codes of frames P .. F - 1, [B, K − Q', F − P], window by window."""
        _check_shape(coarse, (None, self.config.n_coarse, None), "coarse codes [B, Q', F]")
        _check_shape(prompt, (coarse.shape[0], self.n_levels, None), "fine prompt [B, K-Q', P]")
        n_known, n_total = prompt.shape[2], coarse.shape[2]
        if n_known > n_total:
            raise ValueError(f"fine prompt of {n_known} frames is longer than coarse {n_total}")
        rows = self.generate_rows(model, list(coarse), list(prompt), params, generator)
        return torch.stack(rows)

    def generate_rows(
        self,
        model: nn.Module,
        coarse: Sequence[torch.Tensor],
        prompts: Sequence[torch.Tensor],
        params: Params | None = None,
        generator: Generators | None = None,
    ) -> list[torch.Tensor]:
        """Per row: coarse [Q', F_b] (prompt + continuation) and prompt fine codes
        [K − Q', P_b] → the fine codes of frames P_b .. F_b - 1; each round decodes the next
        window of every row that has one, in one batch."""
        c = self.config
        plans = [fine_windows(p.shape[1], co.shape[1], c.window_frames, c.context_frames)
                 for co, p in zip(coarse, prompts, strict=True)]
        fine = list(prompts)
        for rows, pairs in window_rounds(plans):
            new = self._decode_rows(
                model, [coarse[b][:, start:end] for b, (start, _, end) in pairs],
                [fine[b][:, start:done] for b, (start, done, _) in pairs],
                [end - done for _, (_, done, end) in pairs],
                pick_rows(params or c.sampling, rows), pick_rows(generator, rows),
            )
            for b, codes in zip(rows, new, strict=True):
                fine[b] = torch.cat([fine[b], codes], dim=1)
        return [f[:, p.shape[1]:] for f, p in zip(fine, prompts, strict=True)]
