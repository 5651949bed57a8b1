"""Batched decoding across jobs: a ragged batch (rows of their own prefix lengths, prompts, token
counts, sampling params and seeds) decoded in one forward per step gives every row the tokens it
gets alone — at the decoder (token and delay-column loops), at the stages (windows in rounds)
and through the whole stream (1, 3 and 8 jobs with the tiny model folder)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from continuation_fixtures import (  # noqa: F401 (fixtures)
    data_root,
    model_dir_fixture,
    write_preset,
)

from continuo.server.continuation import Continuation
from continuo.server.engine.stream import TokenStream
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.generate import (
    ColumnIds,
    decode_column_rows,
    decode_token_rows,
    feed,
    prepare_rows,
)
from continuo.server.model.precision import with_precision
from continuo.server.model.sampling import SamplingParams
from continuo.server.presets import load_preset

SR = 24000
PARAMS = [SamplingParams(0.0), SamplingParams(1.0, top_k=5), SamplingParams(0.8, top_p=0.9),
          SamplingParams(1.3)]
SEEDS = [11, 22, 33, 44]


def gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def sharp(model: Decoder) -> Decoder:
    """Random weights large enough that the logits are peaked and attention matters (at the
    usual N(0, 0.02) init every distribution is nearly flat: a wrong mask would hardly show)."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.4)
    return model.eval()


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    torch.manual_seed(0)
    return sharp(Decoder(DecoderConfig.tiny(vocab_size=48)))


@pytest.fixture(scope="module")
def columns() -> ColumnDecoder:
    torch.manual_seed(1)
    return sharp(ColumnDecoder(DecoderConfig.tiny(vocab_size=40), n_levels=3, level_vocab_size=12))


def test_a_ragged_prefill_gives_each_row_its_own_logits(decoder: Decoder) -> None:
    prefixes = [torch.randint(0, 48, (n,)) for n in (5, 9, 5, 2)]
    state = prepare_rows(decoder, prefixes, 3)
    assert state.cache.starts.tolist() == [4, 0, 4, 7]  # right-aligned at position 9
    token = torch.tensor([[3], [4], [5], [6]])
    state = feed(decoder, state, token)
    for b, prefix in enumerate(prefixes):
        alone = feed(decoder, prepare_rows(decoder, [prefix], 3), token[b:b + 1])
        torch.testing.assert_close(state.logits[b], alone.logits[0], atol=1e-5, rtol=1e-5)


def test_without_the_mask_the_padding_would_leak_in(decoder: Decoder) -> None:
    """The check above can fail: a ragged batch whose starts are dropped attends to the other
    rows' padding positions and gives other logits for the short rows."""
    prefixes = [torch.randint(0, 48, (n,)) for n in (3, 9)]
    state = prepare_rows(decoder, prefixes, 2)
    state.cache.starts = None
    state = feed(decoder, state, torch.tensor([[1], [2]]))
    alone = feed(decoder, prepare_rows(decoder, prefixes[:1], 2), torch.tensor([[1]]))
    assert not torch.allclose(state.logits[0], alone.logits[0], atol=1e-3)


@pytest.mark.parametrize("precision", ["float32", "mixed", "fp16"])
def test_token_rows_match_each_row_decoded_alone(decoder: Decoder, precision: str) -> None:
    """Also at reduced precision: one dtype for every row count, so a job's products do not
    depend on how many jobs share its batch."""
    decoder = with_precision(copy.deepcopy(decoder), precision)
    prefixes = [torch.randint(0, 48, (n,)) for n in (6, 11, 3, 8)]
    n_new = [7, 2, 9, 0]
    allowed = [(8, 40) if i % 2 else (0, 48) for i in range(9)]
    together = decode_token_rows(decoder, prefixes, allowed, n_new, PARAMS, gens(SEEDS))
    for b in range(4):
        alone = decode_token_rows(decoder, prefixes[b:b + 1], allowed, n_new[b:b + 1],
                                  PARAMS[b], gens(SEEDS[b:b + 1]))[0]
        assert together[b].shape == (n_new[b],)
        assert torch.equal(together[b], alone), b
    assert all(8 <= int(t) < 40 for row in together for t in row[1::2])  # allowed[i] honoured
    # and the generators drew only for their own rows' tokens: the same seeds again reproduce
    again = decode_token_rows(decoder, prefixes, allowed, n_new, PARAMS, gens(SEEDS))
    assert all(torch.equal(a, b) for a, b in zip(together, again, strict=True))


def test_column_rows_match_each_row_decoded_alone(columns: ColumnDecoder) -> None:
    ids = ColumnIds(offset=4, level_vocab=12, pad_id=0, n_rows=4)
    known = [torch.randint(0, 12, (3, p)) for p in (5, 0, 2, 7)]
    prefixes = [torch.randint(1, 40, (4, n)) for n in (9, 3, 6, 12)]
    n_new = [4, 6, 0, 2]
    together = decode_column_rows(columns, prefixes, known, n_new, ids, PARAMS, gens(SEEDS))
    for b in range(4):
        alone = decode_column_rows(columns, prefixes[b:b + 1], known[b:b + 1], n_new[b:b + 1],
                                   ids, PARAMS[b], gens(SEEDS[b:b + 1]))[0]
        assert together[b].shape == (3, n_new[b])
        assert torch.equal(together[b], alone), b


@pytest.fixture(scope="module")
def stream(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenStream:
    return TokenStream(Continuation(write_preset(tmp_path_factory.mktemp("preset"), model_dir)))


@pytest.fixture(scope="module")
def piano(data_root: Path) -> np.ndarray:  # noqa: F811
    audio, rate = sf.read(data_root / "valid" / "c.flac", dtype="float32")
    assert rate == SR
    return audio


@pytest.mark.parametrize("n_jobs", [1, 3, 8])
def test_jobs_streamed_together_get_what_each_gets_alone(
    stream: TokenStream, piano: np.ndarray, n_jobs: int, tmp_path: Path
) -> None:
    """Different prompts (lengths and music), seeds, sampling presets and block sizes; two
    blocks each (the second continues the first's state); windows of the tiny stages are short,
    so rows need different numbers of window rounds."""
    hot = load_preset(write_preset(tmp_path, stream.pipeline.preset.model_path,
                                   temperature=1.5))
    specs = [(piano[SR * (j % 3): SR * (j % 3) + 8000 + 2400 * j], 100 + j, [3, 7, 1, 5][j % 4],
              None if j % 2 else hot) for j in range(n_jobs)]

    def starts() -> list:
        return [stream.start(audio, SR, seed, 0.5) for audio, seed, _, _ in specs]

    blocks = {}
    states = starts()
    for round_ in range(2):
        n = [frames + round_ for _, _, frames, _ in specs]
        out = stream.advance_many(states, n, [sampling for *_, sampling in specs])
        states = [state for _, state in out]
        blocks[round_] = [block for block, _ in out]
    for j, (state, spec) in enumerate(zip(starts(), specs, strict=True)):
        _, _, frames, sampling = spec
        first, state = stream.advance(state, frames, sampling)
        second, state = stream.advance(state, frames + 1, sampling)
        assert np.array_equal(first.audio, blocks[0][j].audio), j
        assert np.array_equal(second.audio, blocks[1][j].audio), j
        assert torch.equal(state.codes, states[j].codes)
        assert torch.equal(state.semantic, states[j].semantic)
    if n_jobs > 1:  # the jobs made different music (the check is not trivially equal)
        assert not np.array_equal(blocks[0][0].audio[:500], blocks[0][1].audio[:500])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("static", [False, True])
def test_on_cuda_the_token_loops_never_wait_for_the_device(decoder: Decoder,
                                                          columns: ColumnDecoder,
                                                          static: bool) -> None:
    """No host round trip inside decoding: torch's sync debug mode turns any synchronising call
    (a copy to the host, .item(), a pageable copy to the device) into an error. Sampling, the
    ragged rows' bookkeeping and the delay columns all stay on the device; only the tokens'
    final copy (after the loop) waits. Eager steps and the static step (warmed first)."""
    from continuo.server.model.static_step import StaticStep, use_static_step
    from continuo.server.model.step_graph import graphs_for

    device = torch.device("cuda")
    models = [copy.deepcopy(decoder).to(device), copy.deepcopy(columns).to(device)]
    for model in models:
        use_static_step(model, StaticStep(model, graphs=graphs_for(device)) if static else None)
    ids = ColumnIds(offset=4, level_vocab=12, pad_id=0, n_rows=4)

    def run() -> None:
        gens = [torch.Generator(device=device).manual_seed(s) for s in SEEDS]
        decode_token_rows(models[0], [torch.randint(0, 48, (n,), device=device)
                                      for n in (6, 11, 3, 8)],
                          [(0, 48)] * 9, [7, 2, 9, 1], PARAMS, gens)
        decode_column_rows(models[1], [torch.randint(1, 40, (4, n), device=device)
                                       for n in (9, 3, 6, 12)],
                           [torch.randint(0, 12, (3, p), device=device) for p in (5, 0, 2, 7)],
                           [4, 6, 1, 2], ids, PARAMS, gens)

    run()  # warms allocations, sampling settings and (static) captures
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
