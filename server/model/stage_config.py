"""Configs of the three AudioLM stages, and the vocabulary each stage's decoder reads.

Each stage's decoder embeds several token streams in one table; every stream has its own slice of
ids (`layouts.offsets`), so a semantic token can never be read as a codec code:

    semantic  [semantic V_s]
    coarse    [semantic V_s | SEP | PAD (delay only) | Q' levels × V]   predicts the Q' levels
    fine      [Q' coarse levels × V | SEP | PAD (delay only) | (K − Q') levels × V]

SEP closes the conditioning and opens the predicted stream, so the decoder (whose positions are
relative) always knows where prediction starts, whatever the conditioning's length. PAD fills the
delay layout's empty slots and the rows a conditioning column does not use.

Q' = 3 coarse codebooks of our codec's 8 by default: the issue's benchmark configuration (coarse
3, fine 5), close to the paper's share (4 of 12 SoundStream levels) and to its coarse token rate
(3 × 75 Hz = 225 tokens/s here, 4 × 50 Hz = 200 in the paper), so the coarse stage's 10 s context
is about as long a sequence as the paper's. Windows follow the paper: semantic 30 s, coarse 10 s,
fine 3 s. Default sampling is untuned: somewhat sharper for the acoustic stages than for the
semantic one, whose variety is the music's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from continuo.server.errors import ConfigError
from continuo.server.model.decoder import DecoderConfig
from continuo.server.model.layouts import offsets
from continuo.server.model.sampling import SamplingParams

LAYOUTS = ("flat", "delay")
SIZES = ("tiny", "small", "paper")


@dataclass(frozen=True)
class Vocab:
    """Named streams sharing one id space, each in its own slice [start, stop)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.sizes) or len(set(self.names)) != len(self.names):
            raise ConfigError(f"vocabulary streams must be unique and sized: {self.names}")
        offsets(self.sizes)  # checks every size

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def offset(self, name: str) -> int:
        return offsets(self.sizes)[self.names.index(name)]

    def slice(self, name: str) -> tuple[int, int]:
        """The half-open id range (start, stop) of one stream."""
        start = self.offset(name)
        return start, start + self.sizes[self.names.index(name)]

    def id(self, name: str) -> int:
        """The id of a one-token stream (SEP, PAD)."""
        start, stop = self.slice(name)
        if stop - start != 1:
            raise ConfigError(f"stream {name!r} holds {stop - start} ids, not one")
        return start


def _whole(seconds: float, rate_hz: int, what: str) -> int:
    """seconds × rate as an int, or ConfigError if it is not a whole number >= 1."""
    count = seconds * rate_hz
    if not math.isfinite(count) or abs(count - round(count)) > 1e-6 or round(count) < 1:
        raise ConfigError(f"{what} {seconds!r} s must be a whole number >= 1 at {rate_hz} Hz")
    return round(count)


def _decoder(size: str, vocab_size: int, overrides: Mapping[str, Any] | None) -> DecoderConfig:
    if size not in SIZES:
        raise ConfigError(f"decoder size must be one of {SIZES}, got {size!r}")
    return getattr(DecoderConfig, size)(vocab_size=vocab_size, **dict(overrides or {}))


def _settings(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every field but `decoder`: its default unless given in values."""
    known = {
        f.name: f.default_factory() if f.default is MISSING else f.default
        for f in fields(cls) if f.name != "decoder"
    }
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {unknown}")
    return {**known, **values}


def _check_decoder(decoder: DecoderConfig, vocab: Vocab, longest: int, stage: str) -> None:
    if decoder.vocab_size != vocab.size:
        raise ConfigError(
            f"{stage} stage decoder vocab_size {decoder.vocab_size} must be {vocab.size} "
            f"(streams {dict(zip(vocab.names, vocab.sizes, strict=True))})"
        )
    if longest > decoder.max_seq_len:
        raise ConfigError(
            f"{stage} stage window needs {longest} positions, decoder max_seq_len is "
            f"{decoder.max_seq_len}: shorten window_s or raise max_seq_len"
        )


def config_to_dict(config: Any) -> dict[str, Any]:
    """A stage config as plain JSON-able values (the decoder and sampling as nested dicts)."""
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    return {**data, "decoder": config.decoder.to_dict(), "sampling": asdict(config.sampling)}


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Inverse of `config_to_dict` for the config class `cls` (ConfigError on unknown keys)."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown or "decoder" not in data:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown} or no 'decoder' in {set(data)}")
    values = dict(data)
    values["decoder"] = DecoderConfig.from_dict(dict(values["decoder"]))
    if "sampling" in values:
        values["sampling"] = SamplingParams(**values["sampling"])
    return cls(**values)


@dataclass(frozen=True)
class SemanticStageConfig:
    """Semantic LM: semantic tokens → their continuation. window_s: training context."""

    decoder: DecoderConfig
    vocab_size: int = 512
    rate_hz: int = 25
    window_s: float = 30.0
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.9, top_p=0.95)
    )

    def __post_init__(self) -> None:
        _check_decoder(self.decoder, self.vocab, self.window_tokens, "semantic")

    @classmethod
    def preset(
        cls, size: str = "small", decoder: Mapping[str, Any] | None = None, **values: Any
    ) -> SemanticStageConfig:
        """A config with a decoder of `size` (tiny/small/paper, `decoder` overrides) sized to
        the vocabulary the other values imply."""
        settings = _settings(cls, values)
        vocab = cls._vocab(settings)
        return cls(decoder=_decoder(size, vocab.size, decoder), **settings)

    @staticmethod
    def _vocab(settings: Mapping[str, Any]) -> Vocab:
        return Vocab(("semantic",), (settings["vocab_size"],))

    @property
    def vocab(self) -> Vocab:
        return self._vocab(vars(self))

    @property
    def window_tokens(self) -> int:
        return _whole(self.window_s, self.rate_hz, "semantic window_s")


@dataclass(frozen=True)
class AcousticStageConfig:
    """What the coarse and fine stages share: the codec's codes and the semantic stream.

    layout: "flat" (K decoder steps per frame, the paper) or "delay" (one step per frame).
    n_codebooks K of codebook_size V each at frame_rate_hz; the first n_coarse are the coarse
    codebooks (Q'). window_s: the training window, also the fine stage's generation window.
    """

    decoder: DecoderConfig
    layout: str = "flat"
    n_codebooks: int = 8
    n_coarse: int = 3
    codebook_size: int = 1024
    frame_rate_hz: int = 75
    semantic_vocab_size: int = 512
    semantic_rate_hz: int = 25
    window_s: float = 10.0
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.8, top_p=0.95)
    )

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"acoustic stage layout must be one of {LAYOUTS}: {self.layout!r}")
        if not 1 <= self.n_coarse < self.n_codebooks:
            raise ConfigError(
                f"n_coarse must be in 1..{self.n_codebooks - 1} (n_codebooks - 1), "
                f"got {self.n_coarse}"
            )
        if self.frame_rate_hz % self.semantic_rate_hz:
            raise ConfigError(
                f"frame_rate_hz {self.frame_rate_hz} must be a multiple of semantic_rate_hz "
                f"{self.semantic_rate_hz} (whole frames per semantic token)"
            )
        _check_decoder(self.decoder, self.vocab, self.longest_sequence, self.stage)

    stage = "acoustic"

    @classmethod
    def preset(cls, size: str = "small", decoder: Mapping[str, Any] | None = None, **values: Any):
        """A config with a decoder of `size` (tiny/small/paper, `decoder` overrides) sized to
        the vocabulary the other values imply."""
        settings = _settings(cls, values)
        vocab = cls._vocab(settings)
        return cls(decoder=_decoder(size, vocab.size, decoder), **settings)

    @staticmethod
    def _vocab(settings: Mapping[str, Any]) -> Vocab:
        raise NotImplementedError

    @property
    def vocab(self) -> Vocab:
        return self._vocab(vars(self))

    @property
    def n_fine(self) -> int:
        return self.n_codebooks - self.n_coarse

    @property
    def frames_per_semantic(self) -> int:
        return self.frame_rate_hz // self.semantic_rate_hz

    @property
    def window_frames(self) -> int:
        return _whole(self.window_s, self.frame_rate_hz, f"{self.stage} window_s")

    @property
    def longest_sequence(self) -> int:
        """Decoder positions of one training window (input length + 1)."""
        raise NotImplementedError


def _pad(settings: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    return (("pad",), (1,)) if settings["layout"] == "delay" else ((), ())


@dataclass(frozen=True)
class CoarseStageConfig(AcousticStageConfig):
    """Coarse LM: semantic tokens, SEP, then the first n_coarse codebooks (flat or delay).

    semantic_dropout: the share of training windows shown without their semantic tokens (SEP
    right away), so that the same stage also continues acoustic tokens alone — the paper's
    acoustic-only ablation, without a second model to train.
    """

    window_s: float = 10.0
    semantic_dropout: float = 0.0
    stage = "coarse"

    def __post_init__(self) -> None:
        if not 0 <= self.semantic_dropout < 1:
            raise ConfigError(f"semantic_dropout must be in [0, 1), got {self.semantic_dropout}")
        super().__post_init__()

    @staticmethod
    def _vocab(settings: Mapping[str, Any]) -> Vocab:
        pad_names, pad_sizes = _pad(settings)
        return Vocab(
            ("semantic", "sep", *pad_names, "coarse"),
            (settings["semantic_vocab_size"], 1, *pad_sizes,
             settings["n_coarse"] * settings["codebook_size"]),
        )

    @property
    def longest_sequence(self) -> int:
        frames = self.window_frames
        semantic = frames // self.frames_per_semantic
        if self.layout == "flat":
            return semantic + 1 + frames * self.n_coarse
        return semantic + 1 + frames + self.n_coarse - 1


@dataclass(frozen=True)
class FineStageConfig(AcousticStageConfig):
    """Fine LM, window by window: coarse codes, SEP, then the fine codebooks (flat or delay).

    context_s: how much of the previous window's fine codes each following window repeats as its
    prompt (continuity across windows); 0 gives the paper's independent windows.
    """

    window_s: float = 3.0
    context_s: float = 1.0
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.6, top_p=0.9)
    )
    stage = "fine"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.context_s < self.window_s:
            raise ConfigError(
                f"fine context_s must be in [0, window_s {self.window_s}), got {self.context_s}"
            )
        if self.context_s > 0:
            _whole(self.context_s, self.frame_rate_hz, "fine context_s")

    @staticmethod
    def _vocab(settings: Mapping[str, Any]) -> Vocab:
        pad_names, pad_sizes = _pad(settings)
        size = settings["codebook_size"]
        n_fine = settings["n_codebooks"] - settings["n_coarse"]
        return Vocab(
            ("coarse", "sep", *pad_names, "fine"),
            (settings["n_coarse"] * size, 1, *pad_sizes, max(n_fine, 1) * size),
        )

    @property
    def context_frames(self) -> int:
        return round(self.context_s * self.frame_rate_hz)

    @property
    def longest_sequence(self) -> int:
        frames = self.window_frames
        if self.layout == "flat":
            return frames * self.n_codebooks + 1
        return frames + 1 + frames + self.n_fine - 1
