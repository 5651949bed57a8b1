"""The decoder: cached decoding equals the full forward, causality, relative positions, the KV
cache's cuts, presets, and a tiny model that learns a sequence by heart."""

from __future__ import annotations

import time

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from continuo.server.errors import ConfigError
from continuo.server.model.decoder import (
    Decoder,
    DecoderConfig,
    RelativePositionBias,
    relative_position_bucket,
)
from continuo.server.model.kv_cache import KVCache

VOCAB = 64


def tiny(**overrides) -> Decoder:
    return Decoder(DecoderConfig.tiny(vocab_size=VOCAB, **overrides)).eval()


def tokens(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length))


def decode_incrementally(model: Decoder, seq: torch.Tensor, prompt_len: int) -> list[torch.Tensor]:
    """Prefill `prompt_len` tokens, then one token a step; the logits of every call."""
    cache = model.new_cache(seq.shape[0], seq.shape[1])
    logits, cache = model.step(seq[:, :prompt_len], cache)
    out = [logits]
    for t in range(prompt_len, seq.shape[1]):
        logits, cache = model.step(seq[:, t : t + 1], cache)
        out.append(logits)
    assert cache.length == seq.shape[1]
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"norm": "rms", "bias": False},
        {"tie_embeddings": False, "n_layers": 3},
        {"n_heads": 4, "n_kv_heads": 1},
    ],
    ids=["layernorm", "rmsnorm-nobias", "untied-3layers", "grouped-kv-heads"],
)
@torch.no_grad()
def test_cached_decoding_matches_full_forward_at_every_step(overrides) -> None:
    model = tiny(**overrides)
    seq = tokens(2, 80)  # longer than rel_max_distance 32: the far buckets are exercised too
    full = model(seq)  # (B, T, V)
    steps = decode_incrementally(model, seq, prompt_len=10)
    assert torch.allclose(steps[0], full[:, :10], atol=1e-4)
    for i, logits in enumerate(steps[1:]):
        t = 10 + i
        err = (logits[:, 0] - full[:, t]).abs().max().item()
        assert err < 1e-4, f"step at position {t}: max |cached - full| = {err}"


@torch.no_grad()
def test_prefill_in_chunks_equals_one_prefill() -> None:
    model = tiny()
    seq = tokens(2, 40)
    one = model.new_cache(2, 40)
    whole, _ = model.step(seq, one)
    chunked = model.new_cache(2, 40)
    parts, start = [], 0
    for size in (5, 1, 13, 21):
        logits, chunked = model.step(seq[:, start : start + size], chunked)
        parts.append(logits)
        start += size
    assert chunked.length == one.length == 40
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-5)
    assert torch.allclose(chunked.keys, one.keys, atol=1e-5)
    assert torch.allclose(chunked.values, one.values, atol=1e-5)


@torch.no_grad()
def test_causal_a_future_token_changes_only_later_logits() -> None:
    model = tiny()
    seq = tokens(1, 40)
    changed = seq.clone()
    changed[0, 25] = (seq[0, 25] + 1) % VOCAB
    before, after = model(seq), model(changed)
    assert torch.equal(before[:, :25], after[:, :25])
    assert not torch.allclose(before[:, 25:], after[:, 25:], atol=1e-4)


@torch.no_grad()
def test_dropout_only_in_training() -> None:
    model = tiny(dropout=0.2)
    seq = tokens(2, 20)
    model.train()
    assert not torch.allclose(model(seq), model(seq))
    model.eval()
    assert torch.equal(model(seq), model(seq))


@torch.no_grad()
def test_batch_rows_are_independent() -> None:
    model = tiny()
    seq = tokens(3, 30)
    together = decode_incrementally(model, seq, prompt_len=8)
    alone = decode_incrementally(model, seq[1:2], prompt_len=8)
    for both, single in zip(together, alone, strict=True):
        assert torch.allclose(both[1:2], single, atol=1e-5)


def test_bucket_table_follows_t5() -> None:
    distance = torch.arange(200)
    buckets = relative_position_bucket(distance, n_buckets=32, max_distance=128)
    assert buckets[:16].tolist() == list(range(16))  # exact near the query
    assert buckets[16:19].tolist() == [16, 16, 16]
    assert buckets[32].item() == 21 and buckets[64].item() == 26
    assert buckets[112].item() == 30 and (buckets[113:] == 31).all()
    assert (buckets.diff() >= 0).all()  # farther never lands in a nearer bucket


@torch.no_grad()
def test_bias_depends_only_on_distance_and_is_causal() -> None:
    bias = RelativePositionBias(n_heads=3, n_buckets=8, max_distance=32, max_seq_len=256)
    torch.nn.init.normal_(bias.table.weight)
    at_zero = bias(0, 10)  # (1, nh, 10, 10)
    for start in (1, 7, 150):
        shifted = bias(start, 10)  # (1, nh, 10, start + 10)
        assert shifted.shape == (1, 3, 10, start + 10)
        assert torch.equal(shifted[..., start:], at_zero)
    assert torch.isinf(at_zero.triu(diagonal=1)[at_zero.triu(diagonal=1) != 0]).all()
    assert torch.isfinite(at_zero.tril()).all()
    row = bias(99, 1)  # one decoding step: a single row against 100 keys
    assert row.shape == (1, 3, 1, 100)
    assert torch.equal(row, bias(0, 100)[:, :, 99:100])


@torch.no_grad()
def test_shifted_sequence_gives_same_logits_after_keep_last() -> None:
    # One layer: its cached keys depend only on the tokens, so moving a sequence from absolute
    # cache position 7 to position 0 must not change any logits, if positions are relative.
    model = tiny(n_layers=1)
    junk, seq = tokens(2, 7), tokens(2, 30)
    cache = model.new_cache(2, 64)
    model.step(torch.cat([junk, seq[:, :20]], dim=1), cache)
    cache.keep_last(20)
    assert cache.length == 20
    steps = [model.step(seq[:, t : t + 1], cache)[0] for t in range(20, 30)]
    full = model(seq)
    assert torch.allclose(torch.cat(steps, dim=1), full[:, 20:], atol=1e-4)


@torch.no_grad()
def test_truncate_rolls_back_to_an_earlier_prefix() -> None:
    model = tiny()
    seq, detour = tokens(2, 30), tokens(2, 12)
    cache = model.new_cache(2, 64)
    model.step(seq[:, :20], cache)
    model.step(detour, cache)  # tokens that get rejected
    cache.truncate(20)
    steps = [model.step(seq[:, t : t + 1], cache)[0] for t in range(20, 30)]
    assert torch.allclose(torch.cat(steps, dim=1), model(seq)[:, 20:], atol=1e-4)
    cache.reset()
    assert cache.length == 0


def test_cache_refuses_misuse() -> None:
    model = tiny()
    cache = model.new_cache(2, 16)
    assert (cache.n_layers, cache.batch_size, cache.n_heads, cache.max_len, cache.head_size) == (
        2, 2, 2, 16, 16,
    )
    model.step(tokens(2, 10), cache)
    with pytest.raises(ConfigError, match="full"):
        model.step(tokens(2, 7), cache)
    assert cache.length == 10  # a refused step leaves the cache as it was
    with pytest.raises(ConfigError, match="batch"):
        model.step(tokens(3, 1), cache)
    with pytest.raises(ConfigError, match=r"keep 0\.\.10"):
        cache.truncate(11)
    with pytest.raises(ConfigError, match=r"keep 0\.\.10"):
        cache.keep_last(-1)
    with pytest.raises(ConfigError, match="max_len"):
        model.new_cache(1, 257)
    with pytest.raises(ConfigError, match="max_seq_len"):
        model(tokens(1, 257))
    with pytest.raises(ConfigError, match="does not fit"):
        model.step(tokens(2, 1), KVCache.empty(3, 2, 2, 16, 16))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n_heads": 5}, "multiple of n_heads"),
        ({"n_kv_heads": 3}, "n_kv_heads must divide"),
        ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads must divide"),
        ({"d_model": 0}, "d_model"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": "batch"}, "norm"),
        ({"rel_buckets": 1}, "rel_buckets"),
        ({"rel_max_distance": 4}, "rel_max_distance"),
    ],
)
def test_config_rejects_bad_values(bad, message) -> None:
    with pytest.raises(ConfigError, match=message):
        DecoderConfig.tiny(**bad)


def test_config_round_trips_through_a_dict() -> None:
    config = DecoderConfig.small(vocab_size=3072, norm="rms")
    assert DecoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown decoder config keys"):
        DecoderConfig.from_dict({**config.to_dict(), "n_layer": 4})


def expected_non_embedding_params(c: DecoderConfig) -> int:
    """Count by hand: per layer qkv + proj + up + down (+ biases) + two norms; final norm; the
    relative-bias table."""
    d, f, b = c.d_model, c.d_ff, int(c.bias)
    qkv = d + 2 * c.kv_heads * c.head_size
    norm = d * (1 + b) if c.norm == "layer" else d
    layer = (d * qkv + qkv * b) + (d * d + d * b) + (d * f + f * b) + (f * d + d * b) + 2 * norm
    return c.n_layers * layer + norm + c.rel_buckets * c.n_heads


def test_paper_preset_has_audiolm_size() -> None:
    config = DecoderConfig.paper()
    assert (config.n_layers, config.n_heads, config.d_model, config.d_ff) == (12, 16, 1024, 4096)
    with torch.device("meta"):  # no memory, no init cost
        model = Decoder(config)
        logits = model(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, config.vocab_size)
    assert model.num_params() == expected_non_embedding_params(config)
    assert 150e6 < model.num_params() < 152e6  # 12 · 12 · 1024² ≈ 151M, as AudioLM
    assert model.num_params(non_embedding=False) == model.num_params() + 1024 * 1024


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [("small", {}), ("small", {"n_kv_heads": 1, "norm": "rms"}), ("tiny", {})],
)
@torch.no_grad()
def test_presets_build_and_decode(preset, overrides) -> None:
    config = getattr(DecoderConfig, preset)(vocab_size=VOCAB, **overrides)
    model = Decoder(config).eval()
    assert model.num_params() == expected_non_embedding_params(config)
    cache = model.new_cache(1, 8)
    logits, cache = model.step(tokens(1, 6), cache)
    logits, cache = model.step(tokens(1, 1), cache)
    assert logits.shape == (1, 1, VOCAB) and torch.isfinite(logits).all()


def test_weights_save_and_load_with_safetensors(tmp_path) -> None:
    model = tiny()
    state = model.state_dict()
    assert "rel_bias.buckets" not in state  # a constant, rebuilt from the config
    path = tmp_path / "decoder.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    loaded = Decoder(model.config).eval()
    loaded.load_state_dict(safetensors.torch.load_file(path))
    seq = tokens(1, 12)
    with torch.no_grad():
        assert torch.equal(loaded(seq), model(seq))


def test_tiny_model_learns_a_sequence_by_heart_and_regenerates_it() -> None:
    started = time.perf_counter()
    model = Decoder(DecoderConfig.tiny(vocab_size=VOCAB, d_model=64, d_ff=128))
    seq = tokens(1, 48)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(300):
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), seq[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.1
    assert model.rel_bias.table.weight.grad.abs().sum() > 0  # the bias is learned
    model.eval()
    with torch.no_grad():  # greedy, with the cache, from the first token
        cache = model.new_cache(1, 48)
        logits, cache = model.step(seq[:, :1], cache)
        out = [seq[:, :1]]
        for _ in range(47):
            out.append(logits[:, -1:].argmax(-1))
            logits, cache = model.step(out[-1], cache)
    assert torch.equal(torch.cat(out, dim=1), seq)
    assert time.perf_counter() - started < 30
