"""The token cache on a tiny data folder of rendered piano (tiny random codec, tiny fitted
semantic tokenizer): contents, reuse, stale detection, damage; aligned, seeded windows."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import progression_notes, render_piano
from test_small_codec import TINY

from continuo.server.audio import load_audio
from continuo.server.data.manifest import ManifestItem, make_manifest, write_manifest
from continuo.server.errors import ConfigError, DataError
from continuo.server.tokenizers.semantic import MusicFeatures, SemanticTokenizer, extract_features
from continuo.server.tokenizers.small_codec import SmallCodec, SmallCodecConfig
from continuo.server.training.token_cache import (
    TokenSplit,
    WindowSampler,
    cache_is_fresh,
    ensure_token_cache,
    frames_per_semantic,
    load_tokenizers,
    open_token_cache,
)

SR = 24000
KBPS = 4 * 0.375  # all 4 codebooks of the tiny codec (32 entries at 75 Hz: 0.375 kbps each)
CODEC_75HZ = SmallCodecConfig(**{**TINY, "ratios": (8, 5, 4, 2)})  # hop 320: 75 Hz


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three rendered progressions (~6.8 s each): two train pieces, one valid."""
    root = tmp_path_factory.mktemp("data")
    items = []
    for name, split, key in (("a", "train", 0), ("b", "train", 5), ("c", "valid", -3)):
        path = root / split / f"{name}.flac"
        path.parent.mkdir(exist_ok=True)
        audio = render_piano(progression_notes(transpose=key))
        sf.write(path, audio, SR, subtype="PCM_16")
        items.append(ManifestItem(path, f"test/{name}", split, len(audio) / SR))
    write_manifest(make_manifest(root, SR, "folder", items))
    return root


def varied_codec(data_root: Path) -> SmallCodec:
    """The tiny codec with codebooks k-means-initialised on the train audio's latents, so its
    codes follow the music (an untrained quantiser codes nearly every frame alike, and then a
    test comparing frames cannot tell one frame from its neighbour)."""
    codec = SmallCodec.from_config(CODEC_75HZ)
    latents = []
    with torch.no_grad():
        for path in sorted((data_root / "train").glob("*.flac")):
            x = torch.from_numpy(sf.read(path, dtype="float32")[0])[None, None]
            latents.append(codec.model.encode_latents(x / x.pow(2).mean().sqrt())[0].T)
    codec.model.init_quantizer(torch.cat(latents))
    return codec


@pytest.fixture(scope="module")
def model_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    varied_codec(data_root).save(root / "codec")
    fit_semantic(data_root, root / "semantic", clusters=8)
    return root


def fit_semantic(data_root: Path, folder: Path, clusters: int) -> None:
    music = MusicFeatures()
    audio = load_audio(data_root / "train" / "a.flac").samples[0]
    SemanticTokenizer.fit(music, [extract_features(music, audio, SR)], clusters).save(folder)


def test_cache_holds_every_items_tokens_from_the_codec_and_tokenizer(
    data_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    tokenizers = load_tokenizers(model_dir / "codec", model_dir / "semantic", bandwidth_kbps=KBPS)
    cache = ensure_token_cache(data_root, tmp_path / "tokens", tokenizers, progress=False)
    assert cache.splits == ["train", "valid"] and cache.frames_per_semantic == 3
    assert cache.meta["splits"]["train"]["items"] == ["train/a.flac", "train/b.flac"]
    train = cache.split("train")
    assert len(train) == 2 and train.n_codebooks == 4 and train.semantic.dtype == torch.int16
    codec = SmallCodec.load(model_dir / "codec")
    semantic = SemanticTokenizer.load(model_dir / "semantic")
    for i, name in enumerate(("a", "b")):
        audio = load_audio(data_root / "train" / f"{name}.flac").samples  # [1, T]
        n_samples = audio.shape[1]
        s0, s1 = train.semantic_offsets[i : i + 2].tolist()
        a0, a1 = train.acoustic_offsets[i : i + 2].tolist()
        assert s1 - s0 == math.ceil(n_samples / 960) and a1 - a0 == math.ceil(n_samples / 320)
        np.testing.assert_array_equal(train.semantic[s0:s1].numpy(),
                                      semantic.tokenize(audio[0], SR))
        codes = codec.encode(torch.from_numpy(audio)[None]).codes[0]
        torch.testing.assert_close(train.acoustic[:, a0:a1].long(), codes)
    assert len(cache.split("valid")) == 1


def mtime(folder: Path) -> int:
    return (folder / "train.safetensors").stat().st_mtime_ns


def test_cache_is_reused_and_rebuilt_when_stale_or_damaged(
    data_root: Path, model_dir: Path, tmp_path: Path
) -> None:
    folder, model = tmp_path / "tokens", tmp_path / "model"
    shutil.copytree(model_dir, model)
    tokenizers = load_tokenizers(model / "codec", model / "semantic", bandwidth_kbps=KBPS)
    ensure_token_cache(data_root, folder, tokenizers, progress=False)
    built = mtime(folder)
    ensure_token_cache(data_root, folder, tokenizers, progress=False)
    assert mtime(folder) == built  # reused

    fewer = load_tokenizers(model / "codec", model / "semantic", bandwidth_kbps=KBPS / 2)
    assert not cache_is_fresh(folder, data_root, fewer)  # another bandwidth
    assert ensure_token_cache(data_root, folder, fewer, False).split("train").n_codebooks == 2

    fit_semantic(data_root, model / "semantic", clusters=6)  # a retrained tokenizer
    retrained = load_tokenizers(model / "codec", model / "semantic", bandwidth_kbps=KBPS)
    assert not cache_is_fresh(folder, data_root, retrained)
    cache = ensure_token_cache(data_root, folder, retrained, progress=False)
    assert cache.meta["tokenizers"]["semantic"]["vocab_size"] == 6
    assert int(cache.split("train").semantic.max()) < 6

    damaged = folder / "valid.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="damaged"):
        open_token_cache(folder).split("valid")
    assert not cache_is_fresh(folder, data_root, retrained)
    ensure_token_cache(data_root, folder, retrained, progress=False).split("valid")  # rebuilt

    manifest = json.loads((data_root / "manifest.json").read_text())
    changed = tmp_path / "data"
    shutil.copytree(data_root, changed)
    manifest["items"] = manifest["items"][:2]  # valid item dropped
    (changed / "manifest.json").write_text(json.dumps(manifest))
    assert not cache_is_fresh(folder, changed, retrained)
    assert ensure_token_cache(changed, folder, retrained, progress=False).splits == ["train"]


def stamped_split(lengths_s: list[int]) -> TokenSplit:
    """Tokens that say when they happen: semantic = frame index, every codebook = the index of
    the semantic frame its 75 Hz frame falls in; one spare codec frame per item (as ceil gives)."""
    semantic = [np.arange(n) + 1000 * i for i, n in enumerate(lengths_s)]
    acoustic = [np.stack([np.arange(3 * n + 1) // 3 + 1000 * i] * 2) for i, n in
                enumerate(lengths_s)]
    return TokenSplit.from_items(semantic, acoustic, 3, 25.0)


def test_windows_are_aligned_crops_of_one_item() -> None:
    split = stamped_split([30, 80, 200])
    sampler = WindowSampler(split, crop_seconds=1.6, seed=3)  # 40 semantic frames
    windows = sampler.batch(step=0, batch_size=24)
    assert {len(w.semantic) for w in windows} == {30, 40}  # item 0 is shorter than the crop
    for w in windows:
        assert w.semantic.dtype == torch.int64 and w.acoustic.shape == (2, 3 * len(w.semantic))
        item = int(w.semantic[0]) // 1000
        assert (w.semantic // 1000 == item).all()  # one item
        assert (w.semantic.diff() == 1).all()  # contiguous
        expected = w.semantic.repeat_interleave(3)  # codec frames of the same instants
        assert torch.equal(w.acoustic[0], expected) and torch.equal(w.acoustic[1], expected)
    starts = {int(w.semantic[0]) for w in windows if int(w.semantic[0]) // 1000 == 2}
    assert len(starts) > 3  # random starts


def test_windows_are_a_pure_function_of_seed_and_step() -> None:
    split = stamped_split([60, 90, 120])
    a = WindowSampler(split, 1.0, seed=0)
    b = WindowSampler(split, 1.0, seed=0)
    first = [w.semantic.tolist() for w in a.batch(5, 8)]
    assert first == [w.semantic.tolist() for w in b.batch(5, 8)]
    assert first[4:] == [w.semantic.tolist() for w in b.batch(5, 4, first=4)]  # rank 1 of 2
    assert first != [w.semantic.tolist() for w in a.batch(6, 8)]
    assert first != [w.semantic.tolist() for w in WindowSampler(split, 1.0, seed=1).batch(5, 8)]


def test_rates_must_align_and_windows_stay_inside_items() -> None:
    assert frames_per_semantic(75.0, 25.0) == 3 and frames_per_semantic(150.0, 25.0) == 6
    with pytest.raises(ConfigError, match="whole multiple"):
        frames_per_semantic(60.0, 25.0)
    split = stamped_split([10])
    assert split.semantic_frames(0) == 10
    with pytest.raises(DataError, match="outside"):
        split.window(0, 5, 6)
