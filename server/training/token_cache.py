"""Tokens precomputed once per data folder and tokenizer pair, cached on disk; aligned windows.

    cache = ensure_token_cache(data_root, cache_dir, load_tokenizers(codec_spec, semantic_dir))
    sampler = WindowSampler(cache.split("train"), crop_seconds=10.0, seed=0)
    windows = sampler.batch(step=12, batch_size=16)        # list[TokenWindow], same every time

A cache folder holds, per split, `<split>.safetensors`:

    semantic [N_s] int16        every item's semantic tokens, concatenated
    acoustic [K, N_f] int16     every item's codec codes (all K codebooks), concatenated
    semantic_offsets [n + 1]    item i is semantic[semantic_offsets[i] : semantic_offsets[i+1]]
    acoustic_offsets [n + 1]    int64, likewise along the frames of `acoustic`

(int32 instead of int16 when a vocabulary has more than 32,768 ids), and `cache.json`:

    {"format": "continuo-token-cache", "version": 1, "manifest_sha256": "...",
     "tokenizers": {"codec": {"spec", "hash", "frame_rate", "n_codebooks", ...},
                    "semantic": {"hash", "frame_rate", "vocab_size"}},
     "splits": {"train": {"items": [...paths], "skipped": [...], "sha256": "..."}, ...}}

`ensure_token_cache` rebuilds the folder when the manifest, the codec (weights, bandwidth) or
the semantic tokenizer changed, or a split file was damaged; the folder is written beside itself
and renamed into place, so an interrupted build leaves the previous cache intact.

Alignment: semantic tokens come at the semantic rate (25 Hz), codes at the codec's frame rate
(75 Hz); the codec rate must be a whole multiple r of the semantic rate. A window starts on a
semantic frame boundary, so semantic frame s and codec frame s·r begin at the same instant.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tqdm import tqdm

from continuo.server.audio import load_audio
from continuo.server.data.manifest import MANIFEST_NAME, SPLITS, ManifestItem, load_manifest
from continuo.server.errors import AudioError, CheckpointError, ConfigError, DataError
from continuo.server.model.stage_api import TokenWindow
from continuo.server.tokenizers.codec import ENCODEC_CHECKPOINTS, AcousticCodec
from continuo.server.tokenizers.loading import load_codec
from continuo.server.tokenizers.semantic import SemanticTokenizer
from continuo.server.training.checkpoint import atomic_folder, file_sha256

log = logging.getLogger(__name__)

CACHE_FORMAT = "continuo-token-cache"
CACHE_VERSION = 1
META_NAME = "cache.json"
INT16_IDS = 32768  # ids 0 .. 32767 fit int16


@dataclass(frozen=True)
class Tokenizers:
    """The codec and semantic tokenizer a cache is made with, and their identity (hashes)."""

    codec: AcousticCodec
    semantic: SemanticTokenizer
    identity: dict[str, Any]

    @property
    def frames_per_semantic(self) -> int:
        return frames_per_semantic(self.codec.frame_rate, self.semantic.frame_rate)


def frames_per_semantic(codec_rate_hz: float, semantic_rate_hz: float) -> int:
    """Codec frames per semantic frame; ConfigError unless a whole number (75 / 25 = 3)."""
    ratio = codec_rate_hz / semantic_rate_hz
    if ratio < 1 or abs(ratio - round(ratio)) > 1e-6:
        raise ConfigError(f"codec frame rate {codec_rate_hz:g} Hz must be a whole multiple of the "
                          f"semantic rate {semantic_rate_hz:g} Hz for aligned windows")
    return round(ratio)


def _folder_hash(folder: Path, config_name: str = "config.json") -> str:
    """The sha256 of a model folder's config file, which holds its weights' sha256."""
    path = Path(folder) / config_name
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    return file_sha256(path)


def load_tokenizers(
    codec_spec: str | Path,
    semantic_dir: Path,
    *,
    bandwidth_kbps: float = 6.0,
    weights_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> Tokenizers:
    """A codec (`load_codec` spec: encodec_24khz/48khz or a small-codec folder) at
    `bandwidth_kbps`, and the semantic tokenizer in `semantic_dir`."""
    codec = load_codec(codec_spec, bandwidth_kbps=bandwidth_kbps, weights_dir=weights_dir,
                       device=device)
    semantic = SemanticTokenizer.load(semantic_dir)
    if str(codec_spec) in ENCODEC_CHECKPOINTS:
        codec_hash = f"{codec_spec}@{bandwidth_kbps:g}kbps"  # encodec checks its own checksum
    else:
        codec_hash = _folder_hash(Path(codec_spec))
    identity = {
        "codec": {"spec": str(codec_spec), "hash": codec_hash, "sample_rate": codec.sample_rate,
                  "frame_rate": codec.frame_rate, "n_codebooks": codec.n_codebooks,
                  "codebook_size": codec.codebook_size},
        "semantic": {"hash": _folder_hash(semantic_dir), "frame_rate": semantic.frame_rate,
                     "vocab_size": semantic.vocab_size},
    }
    frames_per_semantic(codec.frame_rate, semantic.frame_rate)  # the rates fit, before any work
    return Tokenizers(codec, semantic, identity)


def model_tokenizers(model_dir: Path, bandwidth_kbps: float = 6.0,
                     device: str | torch.device = "cpu") -> Tokenizers:
    """The tokenizers of a model folder laid out like models/piano (codec/, semantic/)."""
    model_dir = Path(model_dir)
    return load_tokenizers(model_dir / "codec", model_dir / "semantic",
                           bandwidth_kbps=bandwidth_kbps, device=device)


# --- one split on disk ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSplit:
    """One split's tokens: concatenated streams and per-item offsets (see the module doc)."""

    semantic: torch.Tensor  # [N_s] int16/int32
    acoustic: torch.Tensor  # [K, N_f] int16/int32
    semantic_offsets: torch.Tensor  # [n + 1] int64
    acoustic_offsets: torch.Tensor  # [n + 1] int64
    frames_per_semantic: int
    semantic_rate_hz: float

    def __post_init__(self) -> None:
        n = len(self.semantic_offsets) - 1
        if len(self.acoustic_offsets) != n + 1 or self.acoustic.dim() != 2:
            raise DataError(f"token split: {n} semantic items but acoustic offsets "
                            f"{tuple(self.acoustic_offsets.shape)}, codes "
                            f"{tuple(self.acoustic.shape)}")
        if int(self.semantic_offsets[-1]) != len(self.semantic) or (
            int(self.acoustic_offsets[-1]) != self.acoustic.shape[1]
        ):
            raise DataError("token split: offsets do not end at the streams' lengths")

    def __len__(self) -> int:
        return len(self.semantic_offsets) - 1

    @property
    def n_codebooks(self) -> int:
        return int(self.acoustic.shape[0])

    def semantic_frames(self, item: int) -> int:
        """Aligned semantic frames of `item`: those whose codec frames are all present."""
        s0, s1 = self.semantic_offsets[item : item + 2].tolist()
        a0, a1 = self.acoustic_offsets[item : item + 2].tolist()
        return min(s1 - s0, (a1 - a0) // self.frames_per_semantic)

    def window(self, item: int, start_frames: int, n_frames: int) -> TokenWindow:
        """Semantic frames start .. start+n of `item` and the codec frames of the same time."""
        if start_frames < 0 or n_frames < 1 or start_frames + n_frames > self.semantic_frames(item):
            raise DataError(f"token split: window {start_frames}+{n_frames} outside item {item} "
                            f"({self.semantic_frames(item)} aligned semantic frames)")
        r = self.frames_per_semantic
        s0 = int(self.semantic_offsets[item]) + start_frames
        a0 = int(self.acoustic_offsets[item]) + start_frames * r
        return TokenWindow(semantic=self.semantic[s0 : s0 + n_frames].long(),
                           acoustic=self.acoustic[:, a0 : a0 + n_frames * r].long())

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"semantic": self.semantic, "acoustic": self.acoustic,
                "semantic_offsets": self.semantic_offsets,
                "acoustic_offsets": self.acoustic_offsets}

    @classmethod
    def from_items(cls, semantic: list[np.ndarray], acoustic: list[np.ndarray],
                   frames_per_semantic: int, semantic_rate_hz: float,
                   ids_below: int = INT16_IDS) -> TokenSplit:
        """Concatenate items (semantic [S_i], acoustic [K, F_i] each); int16 when every id is
        below `ids_below` ≤ 32768, else int32."""
        if len(semantic) != len(acoustic):
            raise DataError(f"token split: {len(semantic)} semantic items, {len(acoustic)} codes")
        dtype = torch.int16 if ids_below <= INT16_IDS else torch.int32
        k = acoustic[0].shape[0] if acoustic else 0
        offsets = [np.cumsum([0] + [len(s) for s in semantic]),
                   np.cumsum([0] + [a.shape[1] for a in acoustic])]
        sem = np.concatenate(semantic) if semantic else np.zeros(0, np.int64)
        ac = np.concatenate(acoustic, axis=1) if acoustic else np.zeros((k, 0), np.int64)
        return cls(torch.from_numpy(np.asarray(sem, np.int64)).to(dtype),
                   torch.from_numpy(np.asarray(ac, np.int64)).to(dtype),
                   torch.from_numpy(offsets[0].astype(np.int64)),
                   torch.from_numpy(offsets[1].astype(np.int64)),
                   frames_per_semantic, semantic_rate_hz)


# --- the cache folder -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCache:
    """An opened cache folder: its metadata and the splits it holds."""

    folder: Path
    meta: dict[str, Any]

    @property
    def semantic_rate_hz(self) -> float:
        return float(self.meta["tokenizers"]["semantic"]["frame_rate"])

    @property
    def frames_per_semantic(self) -> int:
        t = self.meta["tokenizers"]
        return frames_per_semantic(t["codec"]["frame_rate"], t["semantic"]["frame_rate"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def split(self, name: str) -> TokenSplit:
        """Read one split (its sha256 checked); DataError if absent or damaged."""
        if name not in self.meta["splits"]:
            raise DataError(f"{self.folder}: no {name!r} split in the token cache "
                            f"(has {self.splits})")
        path = self.folder / f"{name}.safetensors"
        if not path.is_file() or file_sha256(path) != self.meta["splits"][name]["sha256"]:
            raise DataError(f"{path}: missing or damaged (sha256 differs from {META_NAME}); "
                            "rebuild the token cache")
        t = safetensors.torch.load_file(path)
        return TokenSplit(t["semantic"], t["acoustic"], t["semantic_offsets"],
                          t["acoustic_offsets"], self.frames_per_semantic, self.semantic_rate_hz)


def write_token_cache(folder: Path, splits: dict[str, TokenSplit], meta: dict[str, Any]) -> Path:
    """Write split files and cache.json (`meta` + format, version and split hashes)
    atomically. `meta` needs "tokenizers" (codec and semantic frame rates at least)."""
    with atomic_folder(folder) as tmp:
        split_meta = {}
        for name, split in splits.items():
            path = tmp / f"{name}.safetensors"
            tensors = {k: v.contiguous() for k, v in split.to_tensors().items()}
            safetensors.torch.save_file(tensors, path)
            split_meta[name] = {**meta.get("splits", {}).get(name, {}),
                                "sha256": file_sha256(path)}
        full = {**meta, "format": CACHE_FORMAT, "version": CACHE_VERSION, "splits": split_meta}
        (tmp / META_NAME).write_text(json.dumps(full, indent=1) + "\n", encoding="utf-8")
    return Path(folder)


def open_token_cache(folder: Path) -> TokenCache:
    """Open a cache folder written by `write_token_cache`; DataError if it is not one."""
    path = Path(folder) / META_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        ok = meta["format"] == CACHE_FORMAT and "tokenizers" in meta and "splits" in meta
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable token cache ({err})") from err
    if not ok or meta["version"] != CACHE_VERSION:
        raise DataError(f"{path}: not a version-{CACHE_VERSION} token cache")
    return TokenCache(Path(folder), meta)


def _manifest_sha256(data_root: Path) -> str:
    return file_sha256(load_manifest(data_root).root / MANIFEST_NAME)


def cache_is_fresh(folder: Path, data_root: Path, tokenizers: Tokenizers) -> bool:
    """True when `folder` holds an intact cache of this manifest made by these tokenizers."""
    try:
        cache = open_token_cache(folder)
    except DataError:
        return False
    meta = cache.meta
    if meta.get("manifest_sha256") != _manifest_sha256(data_root) or (
        meta["tokenizers"] != json.loads(json.dumps(tokenizers.identity))
    ):
        return False
    return all((Path(folder) / f"{name}.safetensors").is_file()
               and file_sha256(Path(folder) / f"{name}.safetensors") == split["sha256"]
               for name, split in meta["splits"].items())


def encode_item(tokenizers: Tokenizers, item: ManifestItem) -> tuple[np.ndarray, np.ndarray]:
    """One item's semantic tokens [S] and codes [K, F] (mono audio at the codec's rate)."""
    codec = tokenizers.codec
    audio = load_audio(item.path, sample_rate=codec.sample_rate).samples  # [1, T]
    semantic = tokenizers.semantic.tokenize(audio[0], codec.sample_rate)
    x = torch.from_numpy(audio)[None].expand(1, codec.channels, -1)  # [1, C, T]
    codes = codec.encode(x).codes[0].cpu().numpy()  # [K, F]
    return semantic, codes


def _encode_split(tokenizers: Tokenizers, root: Path, items: list[ManifestItem], name: str,
                  progress: bool) -> tuple[TokenSplit, dict[str, Any]]:
    semantic, acoustic, kept, skipped = [], [], [], []
    for item in tqdm(items, desc=f"tokens ({name})", unit="item", disable=not progress):
        try:
            s, a = encode_item(tokenizers, item)
        except AudioError as err:
            log.warning("token cache: skipping %s", err)
            skipped.append(item.path.relative_to(root).as_posix())
            continue
        semantic.append(s)
        acoustic.append(a)
        kept.append(item.path.relative_to(root).as_posix())
    ids_below = max(tokenizers.semantic.vocab_size, tokenizers.codec.codebook_size)
    split = TokenSplit.from_items(semantic, acoustic, tokenizers.frames_per_semantic,
                                  tokenizers.semantic.frame_rate, ids_below)
    return split, {"items": kept, "skipped": skipped}


def build_token_cache(data_root: Path, folder: Path, tokenizers: Tokenizers,
                      progress: bool = True) -> TokenCache:
    """Encode every item of every non-empty split of `data_root` into `folder` (rewritten)."""
    manifest = load_manifest(data_root)
    splits, split_meta = {}, {}
    for name in SPLITS:
        items = manifest.split(name)
        if items:
            splits[name], split_meta[name] = _encode_split(tokenizers, manifest.root, items,
                                                           name, progress)
    if not splits:
        raise DataError(f"{manifest.path}: no items to tokenize")
    meta = {"manifest_sha256": _manifest_sha256(data_root), "tokenizers": tokenizers.identity,
            "splits": split_meta}
    log.info("token cache: wrote %s (%s)", folder, ", ".join(
        f"{n} {len(s)} items / {len(s.semantic)} semantic tokens" for n, s in splits.items()))
    return open_token_cache(write_token_cache(folder, splits, meta))


def ensure_token_cache(data_root: Path, folder: Path, tokenizers: Tokenizers,
                       progress: bool = True) -> TokenCache:
    """The cache in `folder` when fresh (see `cache_is_fresh`), else a rebuilt one."""
    if cache_is_fresh(folder, data_root, tokenizers):
        log.info("token cache: %s is up to date", folder)
        return open_token_cache(folder)
    if (Path(folder) / META_NAME).is_file():
        log.info("token cache: %s is stale (data or tokenizers changed); rebuilding", folder)
    return build_token_cache(data_root, folder, tokenizers, progress)


# --- random aligned windows -------------------------------------------------------------------


class WindowSampler:
    """Random aligned crops of `crop_seconds`, items drawn in proportion to their length.

    The windows of a batch are a pure function of (seed, step, index): the same step gives the
    same windows in any process, so a resumed run continues the same data, and ranks of a
    distributed run take disjoint slices of one global batch (`batch(step, B)[r*b:(r+1)*b]`).
    Items shorter than the crop give their whole (shorter) length.
    """

    def __init__(self, split: TokenSplit, crop_seconds: float, seed: int = 0) -> None:
        if not crop_seconds > 0:
            raise ConfigError(f"crop_seconds must be > 0, got {crop_seconds}")
        self.split, self.seed = split, seed
        self.crop_frames = max(1, round(crop_seconds * split.semantic_rate_hz))
        lengths = np.array([split.semantic_frames(i) for i in range(len(split))], np.float64)
        if len(lengths) == 0 or lengths.sum() < 2:
            raise DataError("token split holds no item of at least 2 aligned semantic frames")
        self.lengths = lengths.astype(np.int64)
        self.weights = lengths / lengths.sum()

    def window(self, step: int, index: int) -> TokenWindow:
        """The `index`-th window of step `step`."""
        rng = np.random.default_rng([self.seed, step, index])
        item = int(rng.choice(len(self.weights), p=self.weights))
        n = min(self.crop_frames, int(self.lengths[item]))
        start = int(rng.integers(0, self.lengths[item] - n + 1))
        return self.split.window(item, start, n)

    def batch(self, step: int, batch_size: int, first: int = 0) -> list[TokenWindow]:
        """Windows first .. first+batch_size−1 of step `step`."""
        return [self.window(step, i) for i in range(first, first + batch_size)]
