"""The acoustic codec: audio [B, C, T] ⇄ codes [B, K, F].

`AcousticCodec` is the contract every codec meets (EnCodec 24/48 kHz, our small codec), so the
stages, the streaming decoder and the benchmarks never care which one is loaded.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from continuo.server.errors import AudioError, CheckpointError, ConfigError
from continuo.server.tokenizers._encodec import EncodecModel, encodec


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


# ---------------------------------------------------------------------------------------------
# EnCodec (Défossez et al. 2022) through the `encodec` package.
# ---------------------------------------------------------------------------------------------

# The checkpoint file name of each pretrained model, as written in encodec 0.1.1's
# `EncodecModel.encodec_model_24khz` / `encodec_model_48khz` (the part after "-" is the start of
# the file's sha256). torch hub keeps downloads under this name in <hub dir>/checkpoints.
ENCODEC_CHECKPOINTS: dict[str, str] = {
    "encodec_24khz": "encodec_24khz-d7cc33bc.th",
    "encodec_48khz": "encodec_48khz-7e698e3e.th",
}


def build_encodec_model(name: str) -> EncodecModel:
    """encodec's own architecture for `name` ("encodec_24khz" | "encodec_48khz"), random weights.

    Untrained, its codebooks are all zeros (encodec fills them by k-means on the first training
    batch), so it codes every frame as 0 until weights are loaded.
    The one place that silences encodec's `torch.nn.utils.weight_norm` deprecation warning
    (printed once per layer on torch >= 2.1; the layers work as before).
    """
    factories = {
        "encodec_24khz": EncodecModel.encodec_model_24khz,
        "encodec_48khz": EncodecModel.encodec_model_48khz,
    }
    if name not in factories:
        raise ConfigError(f"unknown EnCodec model {name!r}: choose one of {sorted(factories)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = factories[name](pretrained=False)
    model.name = name  # what encodec's pretrained=True sets (used by its file format only)
    return model


def codebooks_for_bandwidth(model: EncodecModel, kbps: float) -> int:
    """Number of RVQ codebooks `model` uses at `kbps` (24 kHz: 1.5 → 2 … 24 → 32)."""
    if kbps not in model.target_bandwidths:
        raise ConfigError(
            f"bandwidth {kbps} kbps is not supported by {model.name}: "
            f"choose one of {model.target_bandwidths}"
        )
    return model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, kbps)


def bandwidth_for_codebooks(model: EncodecModel, n_codebooks: int) -> float:
    """The target bandwidth (kbps) at which `model` uses `n_codebooks` codebooks."""
    by_codebooks = {codebooks_for_bandwidth(model, bw): bw for bw in model.target_bandwidths}
    if n_codebooks not in by_codebooks:
        raise ConfigError(
            f"{model.name} has no bandwidth with {n_codebooks} codebooks: "
            f"choose one of {sorted(by_codebooks)}"
        )
    return float(by_codebooks[n_codebooks])


def encodec_weights_file(name: str, weights_dir: Path | None = None) -> Path:
    """Where the pretrained weights of `name` are read from: `weights_dir`, else the hub cache.

    Raises CheckpointError, saying which file to put where, when the file is not there. Nothing is
    ever downloaded: a user downloads the file once (the URL is in the message).
    """
    if name not in ENCODEC_CHECKPOINTS:
        raise ConfigError(
            f"unknown EnCodec model {name!r}: choose one of {sorted(ENCODEC_CHECKPOINTS)}"
        )
    file_name = ENCODEC_CHECKPOINTS[name]
    folder = Path(weights_dir) if weights_dir is not None else hub_checkpoints_dir()
    path = folder / file_name
    if not path.is_file():
        url = encodec.model.ROOT_URL + file_name
        raise CheckpointError(
            f"EnCodec weights for {name} not found: put {file_name} in {folder} "
            f"(download it from {url}), or name the folder that holds it"
        )
    return path


def hub_checkpoints_dir() -> Path:
    """torch hub's download folder, <TORCH_HOME or ~/.cache/torch>/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def load_encodec_state(path: Path, *, verify_checksum: bool = True) -> dict[str, torch.Tensor]:
    """Read an EnCodec checkpoint (a torch-saved state dict) safely, with weights_only=True.

    This replaces encodec's `_get_pretrained`, which the factories call with pretrained=True:
    without a folder it calls `torch.hub.load_state_dict_from_url`, whose weights_only defaults
    to False even on torch 2.13 (a full unpickle) and which downloads when the file is missing;
    with a folder it calls `torch.load(file)`, safe only where weights_only defaults to True
    (torch >= 2.6). The architecture is still encodec's own (`build_encodec_model`).

    verify_checksum: check the file's sha256 against the prefix in its name, as encodec does
        for a folder it is given (torch hub checks it only while downloading).
    """
    if verify_checksum:
        expected = path.stem.rsplit("-", 1)[-1]
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        actual = sha.hexdigest()[: len(expected)]
        if actual != expected:
            raise CheckpointError(
                f"{path}: sha256 starts with {actual}, not {expected} as its name says; "
                "the file is damaged or not the original: download it again"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged zip, or pickled objects other than tensors
        raise CheckpointError(f"{path}: not a readable torch state dict ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


class EncodecCodec:
    """An `AcousticCodec` around an `EncodecModel` at one bandwidth.

    24 kHz model: mono, causal, 75 frames/s, no normalisation: scale is None.

    48 kHz model: stereo, non-causal, 150 frames/s, normalised. encodec itself cuts audio into
    1 s segments overlapping by 1% (a stride of 148.5 frames) with one RMS scale per segment,
    which gives no single frame grid. This codec encodes the whole clip as one segment
    (`segment = None`): the clip is divided by its RMS, codes are [B, K, F] on one grid and the
    scale is [B, 1], one per clip. The model's time-group-norm layers then normalise over the
    whole clip instead of 1 s, so no chunked decode can match a whole decode exactly: stream it
    with `StreamingConfig(lookahead_frames=8)` (measured, random weights, piano in 0.5 s chunks:
    ~3% RMS from the whole decode near seams, 27% without lookahead).

    The codec owns `model`: it sets the model's bandwidth and segment, so one model serves one
    codec. encode/decode run under torch.inference_mode and return ordinary tensors.
    """

    def __init__(self, model: EncodecModel, bandwidth_kbps: float) -> None:
        model.segment = None  # one segment per clip: codes on one frame grid (see above)
        self.model = model.eval()
        self.bandwidth_kbps = bandwidth_kbps
        self.name: str = model.name
        self.sample_rate: int = model.sample_rate
        self.channels: int = model.channels
        self.hop_length: int = math.prod(model.encoder.ratios)
        self.codebook_size: int = model.quantizer.bins

    @classmethod
    def load(
        cls,
        name: str,
        *,
        bandwidth_kbps: float,
        weights_dir: Path | None = None,
        device: str | torch.device = "cpu",
        verify_checksum: bool = True,
    ) -> EncodecCodec:
        """Pretrained EnCodec from `weights_dir`, else from the torch hub cache; never downloads.

        name: "encodec_24khz" or "encodec_48khz".
        verify_checksum: False for weights of one's own saved under encodec's file name.
        """
        path = encodec_weights_file(name, weights_dir)
        state = load_encodec_state(path, verify_checksum=verify_checksum)
        model = build_encodec_model(name)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # missing, unexpected or misshapen tensors
            raise CheckpointError(f"{path}: does not fit the {name} model ({e})") from e
        return cls(model.to(device), bandwidth_kbps)

    @property
    def bandwidth_kbps(self) -> float:
        return self._bandwidth_kbps

    @bandwidth_kbps.setter
    def bandwidth_kbps(self, kbps: float) -> None:
        codebooks_for_bandwidth(self.model, kbps)  # ConfigError naming the allowed ones
        self.model.set_target_bandwidth(kbps)
        self._bandwidth_kbps = float(kbps)

    @property
    def n_codebooks(self) -> int:
        """Codebooks `encode` produces, set by the bandwidth (settable as either)."""
        return codebooks_for_bandwidth(self.model, self._bandwidth_kbps)

    @n_codebooks.setter
    def n_codebooks(self, n: int) -> None:
        self.bandwidth_kbps = bandwidth_for_codebooks(self.model, n)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def max_codebooks(self) -> int:
        """Codebooks of the model at its highest bandwidth; decode accepts 1 … max_codebooks."""
        return self.model.quantizer.n_q

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, audio: torch.Tensor) -> EncodedAudio:
        """audio [B, C, T] float in [-1, 1] → codes [B, K, F], F = ceil(T / hop_length)."""
        self._check_audio(audio)
        with torch.inference_mode():
            [(codes, scale)] = self.model.encode(audio.to(self.device, torch.float32))
        # Copies made outside inference mode can be modified in place by callers.
        return EncodedAudio(codes.clone(), None if scale is None else scale.clone())

    def decode(self, encoded: EncodedAudio) -> torch.Tensor:
        """codes [B, K, F] (K ≤ max_codebooks) → audio [B, C, F * hop_length]."""
        codes, scale = encoded.codes, encoded.scale
        self._check_codes(codes)
        if scale is None and self.model.normalize:
            raise ValueError(f"{self.name} decodes normalised audio: EncodedAudio.scale is needed")
        if scale is not None:
            scale = scale.to(self.device, torch.float32)
        with torch.inference_mode():
            audio = self.model.decode([(codes.to(self.device), scale)])
        return audio.clone()

    def _check_audio(self, audio: torch.Tensor) -> None:
        if audio.dim() != 3 or audio.shape[1] != self.channels or audio.shape[-1] == 0:
            raise AudioError(
                f"{self.name} encodes audio [B, {self.channels}, T>0], got {list(audio.shape)}"
            )
        if not torch.isfinite(audio).all():
            raise AudioError(f"{self.name}: audio holds NaN or infinite samples")

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.max_codebooks or not codes.numel():
            raise ValueError(
                f"{self.name} decodes codes [B, K, F>0] with 1 <= K <= {self.max_codebooks}, "
                f"got {list(codes.shape)}"
            )
        if codes.dtype.is_floating_point or codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"{self.name}: codes must be integers in [0, {self.codebook_size})")
