"""Feature extractors for the semantic tokenizer: mono audio [T] → frame features [F, D].

Two extractors meet the `FeatureExtractor` contract:

- `MusicFeatures` (built in, no download): a constant-Q log spectrum (C1..B7, one bin a
  semitone) summarised by a DCT to a few coefficients, a 12-bin CQT chroma, onset strength and
  frame loudness, at 25 frames a second by default (the AudioLM semantic rate). Every part is
  relative (to the frame's own maximum, or to the clip's loudest frame), so the same audio at
  another gain gives the same features; chroma and the spectrum make it pitch-sensitive.
- `HubertFeatures`: one hidden layer of a HuBERT-style model loaded through transformers from a
  local folder only (never downloaded), 50 frames a second, optionally average-pooled to 25.

Frame i of an extractor with hop H describes samples [i·H, (i+1)·H): F = ceil(T / H), the same
count as the acoustic codec's frames for a hop that divides the codec's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import librosa
import numpy as np
import scipy.fft
import torch

from continuo.server.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


@runtime_checkable
class FeatureExtractor(Protocol):
    """What every semantic feature extractor offers.

    `__call__` takes mono float32 audio [T] at `sample_rate` (already validated and resampled by
    the caller) and returns float32 features [F, dim], F = ceil(T · frame_rate / sample_rate).
    `config()` is a JSON-able dict that `build_extractor` turns back into the same extractor.
    """

    name: str

    @property
    def sample_rate(self) -> int: ...

    @property
    def frame_rate(self) -> float: ...

    @property
    def dim(self) -> int: ...

    def __call__(self, audio: np.ndarray) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def n_frames(n_samples: int, hop_samples: int) -> int:
    """Frames covering `n_samples` at `hop_samples` per frame: ceil(T / H)."""
    return -(-n_samples // hop_samples)


# --- built-in music features ---------------------------------------------------------------------


@dataclass(frozen=True)
class MusicFeatures:
    """Constant-Q spectrum summary + chroma + onset strength + relative loudness, per frame.

    Features of one frame (dim = n_cepstra + 14):
      [0, n_cepstra)   DCT of the log-CQT in dB relative to the frame's maximum (floor −top_db),
                       scaled to [−1, 0]: the frame's spectral shape (register, voicing, timbre)
      next 12          chroma from the same CQT, C..B, the frame's maximum = 1
      next 1           onset strength: mean positive dB rise from the previous frame, / top_db
      last 1           frame loudness in dB relative to the clip's loudest frame, / top_db, ≥ −1
    A constant gain changes none of them (digital silence stays silence).
    """

    name: ClassVar[str] = "music"
    sample_rate: int = 24000
    frame_rate: float = 25.0
    fmin_midi: int = 24  # C1, 32.7 Hz
    n_octaves: int = 7
    n_cepstra: int = 20
    top_db: float = 60.0

    def __post_init__(self) -> None:
        hop = self.sample_rate / self.frame_rate
        if self.sample_rate <= 0 or self.frame_rate <= 0 or hop != int(hop):
            raise ConfigError(
                f"music features: sample_rate {self.sample_rate} / frame_rate {self.frame_rate} "
                "must be a whole number of samples per frame"
            )
        if not 1 <= self.n_octaves <= 9 or int(hop) % 2 ** (self.n_octaves - 1):
            raise ConfigError(
                f"music features: hop {int(hop)} samples must be divisible by 2^(n_octaves-1) = "
                f"{2 ** (self.n_octaves - 1)} (n_octaves {self.n_octaves})"
            )
        fmax_hz = librosa.midi_to_hz(self.fmin_midi + 12 * self.n_octaves)
        if fmax_hz >= self.sample_rate / 2:
            raise ConfigError(
                f"music features: top CQT bin {fmax_hz:.0f} Hz is above the Nyquist frequency of "
                f"{self.sample_rate} Hz audio; lower fmin_midi or n_octaves"
            )
        if not 1 <= self.n_cepstra <= 12 * self.n_octaves or self.top_db <= 0:
            raise ConfigError(
                f"music features: n_cepstra {self.n_cepstra} must be in [1, {12 * self.n_octaves}]"
                f" and top_db {self.top_db} > 0"
            )

    @property
    def hop_samples(self) -> int:
        return int(self.sample_rate / self.frame_rate)

    @property
    def n_bins(self) -> int:
        return 12 * self.n_octaves

    @property
    def dim(self) -> int:
        return self.n_cepstra + 12 + 2

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """audio [T] float32 at sample_rate → features [F, dim] float32, F = ceil(T / hop)."""
        magnitude = self._cqt(audio)  # [n_bins, F]
        # dB relative to the clip's loudest bin, floored at −2·top_db: every frame down to the
        # loudness floor (−top_db) keeps top_db of spectral shape, and the floor scales with
        # the gain (an absolute floor would not).
        clip_max = max(float(magnitude.max()), 1e-10)
        db = librosa.amplitude_to_db(
            magnitude / clip_max, amin=10 ** (-self.top_db / 10), top_db=None
        )
        frame_max_db = db.max(axis=0)  # [F]
        shape = np.maximum(db - frame_max_db, -self.top_db) / self.top_db  # [n_bins, F], [-1, 0]
        cepstra = scipy.fft.dct(shape, type=2, norm="ortho", axis=0)[: self.n_cepstra]
        chroma = librosa.feature.chroma_cqt(  # of the floored magnitude: silence is flat
            C=librosa.db_to_amplitude(db), sr=self.sample_rate, hop_length=self.hop_samples,
            fmin=librosa.midi_to_hz(self.fmin_midi), bins_per_octave=12, n_octaves=self.n_octaves,
            norm=np.inf,
        )
        clip_db = np.maximum(db, -self.top_db)
        onset = librosa.onset.onset_strength(S=clip_db, lag=1, max_size=1, center=False)
        loudness = np.maximum(frame_max_db, -self.top_db)
        features = np.concatenate(
            [cepstra, chroma, onset[None] / self.top_db, loudness[None] / self.top_db]
        )
        return np.ascontiguousarray(features.T, dtype=np.float32)

    def _cqt(self, audio: np.ndarray) -> np.ndarray:
        """CQT magnitude [n_bins, F] with frame i centred on sample (i + ½)·hop."""
        hop = self.hop_samples
        frames = n_frames(len(audio), hop)
        # librosa centres frame j on sample j·hop of its input: with hop/2 zeros in front and
        # the end padded to whole frames, frame j + 1 is centred on (j + ½)·hop of the audio.
        # Short clips get more zeros at the end, enough for the lowest octave's filters (which
        # run on audio downsampled 2^(n_octaves-1) times); the extra frames are dropped.
        min_samples = 512 * 2 ** (self.n_octaves - 1)
        padded = np.zeros(max(hop // 2 + frames * hop, min_samples), dtype=np.float32)
        padded[hop // 2 : hop // 2 + len(audio)] = audio
        cqt = librosa.cqt(
            padded, sr=self.sample_rate, hop_length=hop, fmin=librosa.midi_to_hz(self.fmin_midi),
            n_bins=self.n_bins, bins_per_octave=12, tuning=0.0,
        )
        return np.abs(cqt[:, 1 : frames + 1])


# --- HuBERT / MERT-style models from a local folder ----------------------------------------------


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:  # the optional `hubert` extra
        raise ConfigError(
            "HuBERT features need the transformers package: pip install 'continuo[hubert]'"
        ) from err
    return transformers


def _conv_geometry(config: Any) -> tuple[int, int]:
    """(receptive field, total stride) in samples of the model's convolutional front end."""
    receptive, stride = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride, strict=True):
        receptive += (kernel - 1) * stride
        stride *= step
    return receptive, stride


class HubertFeatures:
    """Hidden layer `layer` of a HuBERT-style model (transformers) loaded from a local folder.

    folder: a `save_pretrained` folder (config.json + weights; preprocessor_config.json, when
        present, gives the sampling rate and input normalisation). Nothing is ever downloaded.
    layer: 0 = the transformer's input (after the convolutional front end), n = output of
        transformer layer n.
    pool: average this many consecutive frames (2 turns HuBERT's 50 Hz into 25 Hz).
    """

    name: ClassVar[str] = "hubert"

    def __init__(self, folder: Path | str, layer: int, pool: int = 1, device: str = "cpu") -> None:
        self.folder = Path(folder)
        self.layer = layer
        self.pool = pool
        self.device = torch.device(device)
        transformers = _import_transformers()
        if not (self.folder / "config.json").is_file():
            raise CheckpointError(
                f"HuBERT folder {self.folder}: missing or not a model folder (no config.json)"
            )
        try:
            self._model = transformers.AutoModel.from_pretrained(
                self.folder, local_files_only=True
            ).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise CheckpointError(f"HuBERT folder {self.folder}: cannot load model: {err}") from err
        model_config = self._model.config
        if not hasattr(model_config, "conv_stride"):
            raise CheckpointError(
                f"HuBERT folder {self.folder}: {type(self._model).__name__} is not a HuBERT-style "
                "model (no convolutional front end)"
            )
        if not 0 <= layer <= model_config.num_hidden_layers or pool < 1:
            raise ConfigError(
                f"HuBERT folder {self.folder}: layer {layer} must be in "
                f"[0, {model_config.num_hidden_layers}] and pool {pool} ≥ 1"
            )
        self._receptive, self._stride = _conv_geometry(model_config)
        self._sample_rate, self._normalize = self._read_preprocessor()
        self._dim = int(model_config.hidden_size)

    def _read_preprocessor(self) -> tuple[int, bool]:
        path = self.folder / "preprocessor_config.json"
        if not path.is_file():
            return 16000, False
        try:
            pre = json.loads(path.read_text())
            return int(pre.get("sampling_rate", 16000)), bool(pre.get("do_normalize", False))
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: not a valid preprocessor config: {err}") from err

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def frame_rate(self) -> float:
        return self._sample_rate / (self._stride * self.pool)

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder), "layer": self.layer,
                "pool": self.pool}

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """audio [T] float32 at sample_rate → features [F, dim], F = ceil(T / (stride · pool))."""
        frames = n_frames(len(audio), self._stride)
        # Pad so the convolutional front end yields exactly `frames` frames.
        padded = np.zeros(frames * self._stride + self._receptive - self._stride, np.float32)
        padded[: len(audio)] = audio
        if self._normalize:
            padded = (padded - padded.mean()) / math.sqrt(padded.var() + 1e-7)
        with torch.inference_mode():
            x = torch.from_numpy(padded)[None].to(self.device)  # [1, T]
            hidden = self._model(x, output_hidden_states=True).hidden_states[self.layer][0]
        features = hidden.float().cpu().numpy()  # [frames, dim]
        if self.pool > 1:
            pooled = n_frames(len(features), self.pool)
            tail = np.repeat(features[-1:], pooled * self.pool - len(features), axis=0)
            features = np.concatenate([features, tail]).reshape(pooled, self.pool, -1).mean(1)
        return np.ascontiguousarray(features, dtype=np.float32)


# --- config → extractor --------------------------------------------------------------------------


def build_extractor(config: dict[str, Any], base: Path | None = None) -> FeatureExtractor:
    """Rebuild an extractor from its `config()`; a relative HuBERT folder is taken from `base`."""
    params = dict(config)
    name = params.pop("name", None)
    if name == MusicFeatures.name:
        try:
            return MusicFeatures(**params)
        except TypeError as err:
            raise ConfigError(f"music features config {config}: {err}") from err
    if name == HubertFeatures.name:
        if "folder" not in params:
            raise ConfigError(f"hubert features config {config}: no folder")
        folder = Path(params.pop("folder"))
        if base is not None and not folder.is_absolute():
            folder = base / folder
        return HubertFeatures(folder, **params)
    raise ConfigError(f"unknown feature extractor {name!r} (known: music, hubert)")
