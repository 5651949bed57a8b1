"""The small codec trained here: SEANet encoder → residual VQ → inverse-STFT (or SEANet) decoder.

Audio is divided by its RMS before encoding and the RMS kept as `EncodedAudio.scale` (without it
the trial collapsed on quiet piano, NOTES-codec.md); decoding multiplies it back.

    codec = SmallCodec.from_config(SmallCodecConfig())      # untrained, random weights
    codec.bandwidth_kbps = 3.0                               # → 4 codebooks at 75 Hz
    enc = codec.encode(audio)                                # [B, 1, T] → codes [B, 4, ceil(T/320)]
    audio = codec.decode(enc)                                # [B, 1, F × 320]
    codec.save(folder); SmallCodec.load(folder)              # model.safetensors + config.json
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from continuo.server.errors import AudioError, CheckpointError, ConfigError
from continuo.server.tokenizers._encodec import SEANetDecoder, SEANetEncoder
from continuo.server.tokenizers.codec import EncodedAudio
from continuo.server.tokenizers.istft_head import ISTFTDecoder
from continuo.server.tokenizers.quantizer import QuantizerConfig, ResidualQuantizer
from continuo.server.training.checkpoint import load_model_folder, save_model_folder

KIND = "small_codec"
DECODERS = ("istft", "seanet")
RMS_FLOOR = 1e-4  # the scale of silence (−80 dBFS), so it is not divided by zero


@dataclass(frozen=True)
class SmallCodecConfig:
    """Architecture of the small codec; derived rates are properties."""

    sample_rate: int = 24000
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # hop 320 → 75 Hz at 24 kHz
    n_filters: int = 16
    dimension: int = 128
    lstm_layers: int = 2
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_choices: tuple[int, ...] = (2, 4, 8)  # quantiser dropout; 1.5 / 3 / 6 kbps at 75 Hz
    decoder: str = "istft"
    istft_dim: int = 192
    istft_intermediate_dim: int = 576
    istft_layers: int = 6
    quantizer_decay: float = 0.99
    kmeans_iters: int = 20
    dead_code_fraction: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(self.ratios))
        object.__setattr__(self, "codebook_choices", tuple(self.codebook_choices))
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        positive = ("sample_rate", "n_filters", "dimension", "istft_dim",
                    "istft_intermediate_dim", "istft_layers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"codec {name} must be >= 1, got {getattr(self, name)}")
        if not self.ratios or any(r < 1 for r in self.ratios):
            raise ConfigError(f"codec ratios must be positive integers, got {self.ratios}")
        if self.lstm_layers < 0:
            raise ConfigError(f"codec lstm_layers must be >= 0, got {self.lstm_layers}")
        bad = [n for n in self.codebook_choices if not 1 <= n <= self.n_codebooks]
        if not self.codebook_choices or bad:
            raise ConfigError(f"codebook_choices must be in 1..{self.n_codebooks}, "
                              f"got {self.codebook_choices}")
        _ = self.quantizer  # builds (and so checks) the quantiser's config

    @classmethod
    def for_frame_rate(cls, frame_rate_hz: int, **overrides: Any) -> SmallCodecConfig:
        """Presets: 75 Hz (ratios 8,5,4,2; 8 codebooks) or 50 Hz (8,6,5,2; 12 codebooks); both
        serve 1.5 / 3 / 6 kbps."""
        presets = {
            75: {"ratios": (8, 5, 4, 2), "n_codebooks": 8, "codebook_choices": (2, 4, 8)},
            50: {"ratios": (8, 6, 5, 2), "n_codebooks": 12, "codebook_choices": (3, 6, 12)},
        }
        if frame_rate_hz not in presets:
            raise ConfigError(f"frame rate preset must be one of {sorted(presets)} Hz, "
                              f"got {frame_rate_hz}")
        return cls(**{**presets[frame_rate_hz], **overrides})

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_fft(self) -> int:
        return 4 * self.hop_length

    @property
    def kbps_per_codebook(self) -> float:
        return math.log2(self.codebook_size) * self.frame_rate / 1000.0

    @property
    def quantizer(self) -> QuantizerConfig:
        return QuantizerConfig(
            dimension=self.dimension, n_codebooks=self.n_codebooks,
            codebook_size=self.codebook_size, decay=self.quantizer_decay,
            kmeans_iters=self.kmeans_iters, dead_code_fraction=self.dead_code_fraction,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmallCodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown small codec config keys: {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class CodecForward:
    """A training pass: audio [B, 1, T], codes [B, n_q, F] (n_q = 0 when bypassed), commit loss."""

    audio: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


class SmallCodecModel(nn.Module):
    """The network. Works on RMS-normalised audio; no I/O, no normalisation of its own."""

    def __init__(self, config: SmallCodecConfig):
        super().__init__()
        self.config = config
        seanet = {"channels": 1, "dimension": config.dimension, "n_filters": config.n_filters,
                  "ratios": list(config.ratios), "lstm": config.lstm_layers}
        with warnings.catch_warnings():  # encodec's weight_norm is deprecated in torch >= 2.1
            warnings.simplefilter("ignore", FutureWarning)
            self.encoder = SEANetEncoder(**seanet)
            self.decoder: nn.Module
            if config.decoder == "seanet":
                self.decoder = SEANetDecoder(**seanet)
            else:
                self.decoder = ISTFTDecoder(
                    config.dimension, config.hop_length, config.n_fft, dim=config.istft_dim,
                    intermediate_dim=config.istft_intermediate_dim, n_layers=config.istft_layers,
                )
        self.quantizer = ResidualQuantizer(config.quantizer)

    @property
    def quantizer_initialized(self) -> bool:
        return self.quantizer.initialized

    def encode_latents(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, 1, T] → latents [B, D, F], F = ceil(T / hop)."""
        return self.encoder(audio)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, D, F] → audio [B, 1, F × hop]."""
        return self.decoder(latents)

    def encode_codes(self, audio: torch.Tensor, n_q: int) -> torch.Tensor:
        """audio [B, 1, T] → codes [B, n_q, F]."""
        return self.quantizer.encode(self.encode_latents(audio), n_q)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, F] → audio [B, 1, F × hop]."""
        return self.decode_latents(self.quantizer.decode(codes))

    def init_quantizer(self, latents: torch.Tensor) -> None:
        """k-means the codebooks on latents [N, D] (after the warm-up)."""
        self.quantizer.initialize(latents)

    def forward(self, audio: torch.Tensor, n_q: int) -> CodecForward:
        """audio [B, 1, T] → reconstruction [B, 1, T] through n_q codebooks (0: quantiser bypassed,
        for the warm-up)."""
        latents = self.encode_latents(audio)
        if n_q == 0:
            codes = latents.new_zeros((latents.shape[0], 0, latents.shape[2]), dtype=torch.long)
            quantized, commit = latents, latents.new_zeros(())
        else:
            out = self.quantizer(latents, n_q)
            quantized, codes, commit = out.quantized, out.codes, out.commit_loss
        return CodecForward(self.decode_latents(quantized)[..., : audio.shape[-1]], codes, commit)


def rms_normalize(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """audio [B, C, T] → (audio / rms, rms [B, 1]); the RMS is over channels and time."""
    scale = audio.pow(2).mean(dim=(1, 2)).sqrt().clamp(min=RMS_FLOOR)[:, None]
    return audio / scale[:, :, None], scale


class SmallCodec:
    """The small codec as an `AcousticCodec`: RMS normalisation, bandwidth, save and load."""

    channels = 1

    def __init__(self, model: SmallCodecModel, n_codebooks: int | None = None):
        self.model = model.eval()
        config = model.config
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        self.codebook_size = config.codebook_size
        self.n_codebooks = config.n_codebooks if n_codebooks is None else n_codebooks

    @classmethod
    def from_config(cls, config: SmallCodecConfig) -> SmallCodec:
        return cls(SmallCodecModel(config))

    @property
    def config(self) -> SmallCodecConfig:
        return self.model.config

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def n_codebooks(self) -> int:
        return self._n_codebooks

    @n_codebooks.setter
    def n_codebooks(self, value: int) -> None:
        if not 1 <= value <= self.config.n_codebooks:
            raise ConfigError(f"n_codebooks must be in 1..{self.config.n_codebooks}, got {value}")
        self._n_codebooks = int(value)

    def n_codebooks_for_bandwidth(self, kbps: float) -> int:
        """Codebooks that fit in `kbps` (at least 1); ConfigError if more than the model has."""
        n = max(1, math.floor(kbps / self.config.kbps_per_codebook + 1e-6))
        if n > self.config.n_codebooks:
            top = self.config.n_codebooks * self.config.kbps_per_codebook
            raise ConfigError(f"bandwidth {kbps:g} kbps needs {n} codebooks; this codec has "
                              f"{self.config.n_codebooks} (up to {top:g} kbps)")
        return n

    @property
    def bandwidth_kbps(self) -> float:
        return self.n_codebooks * self.config.kbps_per_codebook

    @bandwidth_kbps.setter
    def bandwidth_kbps(self, kbps: float) -> None:
        self.n_codebooks = self.n_codebooks_for_bandwidth(kbps)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor) -> EncodedAudio:
        """audio [B, 1, T] → codes [B, n_codebooks, ceil(T / hop)], scale [B, 1]."""
        if audio.dim() != 3 or audio.shape[1] != self.channels or audio.shape[2] == 0:
            raise AudioError(f"small codec expects audio [B, 1, T>0], got {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise AudioError("small codec input contains NaN or inf samples")
        self.model.eval()
        normalized, scale = rms_normalize(audio.to(self._device(), torch.float32))
        codes = self.model.encode_codes(normalized, self.n_codebooks)
        return EncodedAudio(codes.to(audio.device), scale.to(audio.device))

    @torch.inference_mode()
    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """codes [B, K, F] (K <= the model's codebooks) → audio [B, 1, F × hop], scale applied."""
        codes = encoded.codes
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.config.n_codebooks:
            raise ConfigError(f"codes must be [B, 1..{self.config.n_codebooks}, F], "
                              f"got {tuple(codes.shape)}")
        self.model.eval()
        audio = self.model.decode_codes(codes.to(self._device())).to(codes.device)
        if encoded.scale is not None:
            audio = audio * encoded.scale.to(audio)[:, :, None]
        return audio

    def save(self, folder: Path, extra: dict[str, Any] | None = None,
             dtype: torch.dtype | None = None) -> Path:
        """Write model.safetensors + config.json (with the weights' sha256) to `folder`.

        dtype: store floating tensors as this (float16 halves a shipped model; `load` reads
        them back into float32).
        """
        state = self.model.state_dict()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        return save_model_folder(folder, state, KIND, self.config.to_dict(), extra)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> SmallCodec:
        """Read a folder written by `save` (or a training checkpoint folder); its weights go
        straight onto `device`."""
        stored = load_model_folder(folder, KIND, device=device)
        try:
            config = SmallCodecConfig.from_dict(stored.config)
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{folder}: invalid small codec config ({err})") from err
        model = SmallCodecModel(config).to(device)
        try:
            model.load_state_dict(with_ema_sums(stored.state_dict), strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{folder}: weights do not fit the config ({err})") from err
        return cls(model)


EMA_SUM_SUFFIX = "_codebook.embed_avg"  # training-only: a shipped codec leaves it out


def with_ema_sums(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state with each codebook's EMA sum (`embed_avg`, only needed to keep training) rebuilt
    as embed × cluster_size where an export left it out; the codes are the same either way."""
    state = dict(state)
    for key in [k for k in state if k.endswith("_codebook.embed")]:
        avg = key.removesuffix("embed") + "embed_avg"
        if avg not in state:
            size = state[key.removesuffix("embed") + "cluster_size"]
            state[avg] = state[key] * size.to(state[key].dtype)[:, None]
    return state
