"""The three AudioLM stages: vocab slices, training examples (loss only on the predicted stream),
tiny models that learn a 4-bar token sequence and regenerate it from its first part, exactly,
for every stage and both layouts, and the delay layout's K-times-fewer decoder steps."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from continuo.server.errors import ConfigError, DataError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import DecoderConfig
from continuo.server.model.layouts import undelay, unflatten
from continuo.server.model.sampling import SamplingParams
from continuo.server.model.stage_api import IGNORE_INDEX, Stage, TokenWindow
from continuo.server.model.stage_config import (
    CoarseStageConfig,
    FineStageConfig,
    SemanticStageConfig,
    config_from_dict,
    config_to_dict,
)
from continuo.server.model.stages import (
    CoarseStage,
    FineStage,
    SemanticStage,
    fine_windows,
    stage_loss,
)

V = 16  # codes per codebook and semantic vocabulary of the tests
K, Q = 6, 3  # codebooks, of which coarse
SEM_PER_BAR, BARS = 3, 4  # 4 bars of 3 semantic tokens: 12 tokens, 0.48 s, 36 frames
ACOUSTIC = {"n_codebooks": K, "n_coarse": Q, "codebook_size": V, "semantic_vocab_size": V,
            "window_s": 0.48}
GREEDY = SamplingParams(temperature=0.0)


def four_bars() -> TokenWindow:
    """Bars A B A C of semantic tokens; each frame's codes a fixed function of its semantic token,
    its phase (3 frames per token) and its level: structure a tiny model can learn by heart."""
    gen = torch.Generator().manual_seed(1)
    bars = torch.randint(0, V, (3, SEM_PER_BAR), generator=gen)
    semantic = torch.cat([bars[0], bars[1], bars[0], bars[2]])  # [12]
    table = torch.randint(0, V, (K, V, 3), generator=gen)  # level, semantic token, phase
    frames = torch.arange(semantic.shape[0] * 3)
    acoustic = table[:, semantic[frames // 3], frames % 3]  # [K, 36]
    return TokenWindow(semantic=semantic, acoustic=acoustic)


def make_stage(kind: str, layout: str = "flat", **overrides) -> Stage:
    if kind == "semantic":
        return SemanticStage(SemanticStageConfig.preset("tiny", vocab_size=V, window_s=0.48))
    if kind == "coarse":
        return CoarseStage(CoarseStageConfig.preset("tiny", layout=layout, **ACOUSTIC, **overrides))
    settings = {"context_s": 0.12, **ACOUSTIC, **overrides}
    return FineStage(FineStageConfig.preset("tiny", layout=layout, **settings))


STAGES = [("semantic", "flat"), ("coarse", "flat"), ("coarse", "delay"), ("fine", "flat"),
          ("fine", "delay")]
STAGE_IDS = [f"{kind}-{layout}" for kind, layout in STAGES]


def train(stage: Stage, window: TokenWindow, max_steps: int = 600) -> tuple[torch.nn.Module, float]:
    """AdamW on one example until the loss is below 0.02 (or max_steps); the model and loss."""
    torch.manual_seed(0)
    model = stage.build_model()
    example = stage.example(window)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(max_steps):
        loss = stage_loss(model(example.inputs[None]), example.targets[None])
        if loss.item() < 0.02:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


@pytest.fixture(scope="module")
def trained() -> dict:
    return {}


def trained_model(cache: dict, kind: str, layout: str) -> tuple[Stage, torch.nn.Module, float]:
    if (kind, layout) not in cache:
        stage = make_stage(kind, layout)
        cache[kind, layout] = (stage, *train(stage, four_bars()))
    return cache[kind, layout]


def regenerate(stage: Stage, model: torch.nn.Module, window: TokenWindow, prompt_frames: int):
    """Greedy continuation of the window's first part; (generated, expected)."""
    sem, codes = window.semantic[None], window.acoustic[None]
    if stage.name == "semantic":
        n = prompt_frames // 3
        out = stage.generate(model, sem[:, :n], sem.shape[1] - n, GREEDY)
        return out, sem[:, n:]
    if stage.name == "coarse":
        out = stage.generate(model, sem, codes[:, :Q, :prompt_frames], params=GREEDY)
        return out, codes[:, :Q, prompt_frames:]
    out = stage.generate(model, codes[:, :Q], codes[:, Q:, :prompt_frames], GREEDY)
    return out, codes[:, Q:, prompt_frames:]


@pytest.mark.parametrize(("kind", "layout"), STAGES, ids=STAGE_IDS)
@pytest.mark.parametrize("prompt_frames", [18, 9])
def test_tiny_stage_learns_four_bars_and_continues_them_exactly(
    trained, kind, layout, prompt_frames
) -> None:
    stage, model, loss = trained_model(trained, kind, layout)
    assert loss < 0.1
    generated, expected = regenerate(stage, model, four_bars(), prompt_frames)
    # The continuation starts at frame P: no gap, no repeated frame, every token right.
    assert generated.shape == expected.shape
    assert torch.equal(generated, expected)


def test_untrained_stage_does_not_regenerate_the_sequence() -> None:
    """The exact-regeneration check can fail: a model that learned nothing misses."""
    stage = make_stage("coarse", "delay")
    generated, expected = regenerate(stage, stage.build_model().eval(), four_bars(), 18)
    assert not torch.equal(generated, expected)


@pytest.mark.parametrize(("kind", "layout"), STAGES, ids=STAGE_IDS)
def test_vocab_slices_do_not_overlap_and_fill_the_table(kind, layout) -> None:
    stage = make_stage(kind, layout)
    assert isinstance(stage, Stage)
    vocab = stage.config.vocab
    slices = sorted(vocab.slice(name) for name in vocab.names)
    assert slices[0][0] == 0 and slices[-1][1] == vocab.size == stage.decoder_config.vocab_size
    for (_, stop), (start, _) in itertools.pairwise(slices):
        assert stop == start  # contiguous, disjoint
    if kind != "semantic":
        assert ("pad" in vocab.names) == (layout == "delay")
        assert vocab.sizes[vocab.names.index("sep")] == 1


def _in(ids: torch.Tensor, vocab, name: str) -> bool:
    start, stop = vocab.slice(name)
    return bool(((ids >= start) & (ids < stop)).all())


def test_semantic_example_predicts_every_next_token() -> None:
    window = four_bars()
    example = make_stage("semantic").example(window)
    assert torch.equal(example.inputs, window.semantic[:-1])
    assert torch.equal(example.targets, window.semantic[1:])


@pytest.mark.parametrize("kind", ["coarse", "fine"])
def test_flat_example_takes_loss_only_on_the_predicted_codes(kind) -> None:
    stage, window = make_stage(kind, "flat"), four_bars()
    vocab, example = stage.config.vocab, stage.example(window)
    cond_name, pred_name = ("semantic", "coarse") if kind == "coarse" else ("coarse", "fine")
    levels = slice(0, Q) if kind == "coarse" else slice(Q, K)
    n_cond = example.inputs.shape[0] + 1 - 36 * (levels.stop - levels.start)  # incl. SEP
    assert _in(example.inputs[: n_cond - 1], vocab, cond_name)
    assert int(example.inputs[n_cond - 1]) == vocab.id("sep")
    assert _in(example.inputs[n_cond:], vocab, pred_name)
    assert bool((example.targets[: n_cond - 1] == IGNORE_INDEX).all())
    predicted = example.targets[n_cond - 1 :]
    assert bool((predicted != IGNORE_INDEX).all())
    codes = unflatten(predicted[None] - vocab.offset(pred_name), levels.stop - levels.start, V)
    assert torch.equal(codes[0], window.acoustic[levels])


@pytest.mark.parametrize("kind", ["coarse", "fine"])
def test_delay_example_takes_loss_only_on_the_predicted_codes(kind) -> None:
    stage, window = make_stage(kind, "delay"), four_bars()
    vocab, example = stage.config.vocab, stage.example(window)
    n_levels = Q if kind == "coarse" else K - Q
    n_cond = 12 + 1 if kind == "coarse" else 36 + 1  # semantic tokens or coarse frames, SEP
    assert example.targets.shape == (n_levels, n_cond - 1 + 36 + n_levels - 1)
    assert example.inputs.shape[1] == example.targets.shape[1]
    assert bool((example.targets[:, : n_cond - 1] == IGNORE_INDEX).all())
    levels = slice(0, Q) if kind == "coarse" else slice(Q, K)
    assert torch.equal(undelay(example.targets[None, :, n_cond - 1 :])[0], window.acoustic[levels])
    assert int((example.targets != IGNORE_INDEX).sum()) == 36 * n_levels  # pads carry no loss
    if kind == "coarse":
        assert _in(example.inputs[0, : n_cond - 1], vocab, "semantic")
        assert bool((example.inputs[1:, : n_cond] == vocab.id("pad")).all())
    else:
        assert _in(example.inputs[:Q, : n_cond - 1], vocab, "coarse")
    assert int(example.inputs[0, n_cond - 1]) == vocab.id("sep")


@torch.no_grad()
def test_column_decoder_cached_steps_match_the_full_forward() -> None:
    model = ColumnDecoder(DecoderConfig.tiny(vocab_size=40), n_levels=3, level_vocab_size=8)
    model.eval()
    columns = torch.randint(0, 40, (2, 4, 50))
    full = model(columns)  # [B, K, T, V]
    cache = model.new_cache(2, 50)
    logits, cache = model.step(columns[:, :, :10], cache)
    steps = [logits] + [model.step(columns[:, :, t : t + 1], cache)[0] for t in range(10, 50)]
    assert torch.allclose(torch.cat(steps, dim=2), full, atol=1e-4)


def count_calls(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("kind", ["coarse", "fine"])
def test_delay_takes_k_times_fewer_decoder_steps_than_flat(kind) -> None:
    window, n_new, steps = four_bars(), 30, {}
    for layout in ("flat", "delay"):
        stage = make_stage(kind, layout)
        model = stage.build_model().eval()
        calls = count_calls(model)
        out, _ = regenerate(stage, model, window, 36 - n_new)
        assert out.shape[-1] == n_new
        steps[layout] = calls[0]
    n_levels = Q if kind == "coarse" else K - Q
    assert steps["flat"] == n_new * n_levels  # prefill + one call per token after the first
    assert steps["delay"] == n_new + n_levels - 1  # prefill + one call per column after the first
    assert steps["flat"] / steps["delay"] > 0.9 * n_levels * n_new / (n_new + n_levels)


def test_fine_windows_cover_the_continuation_with_context() -> None:
    assert fine_windows(100, 400, 225, 75) == [(25, 100, 250), (175, 250, 400)]
    assert fine_windows(0, 100, 225, 75) == [(0, 0, 100)]  # shorter clip: one short window
    assert fine_windows(400, 400, 225, 75) == []
    windows = fine_windows(10, 1000, 225, 75)
    assert windows[0][1] == 10 and windows[-1][2] == 1000
    for (_, _, end), (start, done, _) in itertools.pairwise(windows):
        assert done == end and end - start >= 75  # contiguous, each repeats >= 75 frames
    assert all(end - start == 225 for start, _, end in windows)


@pytest.mark.parametrize("layout", ["flat", "delay"])
def test_fine_generation_runs_window_by_window(layout) -> None:
    stage = make_stage("fine", layout, window_s=0.24)  # 18-frame windows over 36 frames
    model = stage.build_model().eval()
    calls = count_calls(model)
    window = four_bars()
    out = stage.generate(model, window.acoustic[None, :Q], window.acoustic[None, Q:, :5], GREEDY)
    assert out.shape == (1, K - Q, 31)
    assert bool(((out >= 0) & (out < V)).all())
    windows = fine_windows(5, 36, 18, 9)
    assert windows == [(0, 5, 18), (9, 18, 27), (18, 27, 36)]
    n_levels = K - Q  # calls per window: prefill + one per token (flat) or column (delay) after
    per_window = [(end - done) * n_levels if layout == "flat" else end - done + n_levels - 1
                  for _, done, end in windows]
    assert calls[0] == sum(per_window)


def test_batch_rows_are_generated_independently() -> None:
    stage = make_stage("coarse", "delay")
    model = stage.build_model().eval()
    window = four_bars()
    sem = torch.stack([window.semantic, window.semantic.flip(0)])
    prompt = torch.stack([window.acoustic[:Q, :9], window.acoustic[:Q, 9:18]])
    both = stage.generate(model, sem, prompt, params=GREEDY)
    for b in range(2):
        alone = stage.generate(model, sem[b : b + 1], prompt[b : b + 1], params=GREEDY)
        assert torch.equal(both[b : b + 1], alone)


def test_sampling_is_seeded_and_stays_in_the_stream() -> None:
    stage = make_stage("semantic")
    model = stage.build_model().eval()
    prompt, params = four_bars().semantic[None, :4], SamplingParams(temperature=1.0)
    runs = [stage.generate(model, prompt, 20, params, torch.Generator().manual_seed(s))
            for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert bool(((runs[0] >= 0) & (runs[0] < V)).all())
    with pytest.raises(ValueError, match="Generator"):
        stage.generate(model, prompt, 4, params, None)


def test_configs_reject_inconsistent_values() -> None:
    with pytest.raises(ConfigError, match="layout"):
        CoarseStageConfig.preset("tiny", layout="parallel", **ACOUSTIC)
    with pytest.raises(ConfigError, match="n_coarse"):
        CoarseStageConfig.preset("tiny", **{**ACOUSTIC, "n_coarse": K})
    with pytest.raises(ConfigError, match="vocab_size"):
        CoarseStageConfig(decoder=DecoderConfig.tiny(vocab_size=99), **ACOUSTIC)
    with pytest.raises(ConfigError, match="whole number"):
        FineStageConfig.preset("tiny", **{**ACOUSTIC, "window_s": 0.4801})
    with pytest.raises(ConfigError, match="max_seq_len"):
        FineStageConfig.preset("tiny", **{**ACOUSTIC, "window_s": 3.0})
    with pytest.raises(ConfigError, match="unknown"):
        SemanticStageConfig.preset("tiny", vocab=V)
    with pytest.raises(ConfigError, match="context_s"):
        FineStageConfig.preset("tiny", **{**ACOUSTIC, "context_s": 0.48})


def test_default_presets_build_with_the_paper_windows() -> None:
    for size in ("small", "paper"):
        coarse = CoarseStageConfig.preset(size)
        fine = FineStageConfig.preset(size, layout="delay")
        semantic = SemanticStageConfig.preset(size)
        assert (coarse.n_coarse, fine.n_fine, coarse.window_frames) == (3, 5, 750)
        assert fine.window_frames == 225 and semantic.window_tokens == 750
        assert coarse.decoder.vocab_size == 512 + 1 + 3 * 1024


def test_bad_windows_and_prompts_are_named() -> None:
    coarse = make_stage("coarse")
    with pytest.raises(DataError, match="K=6"):
        coarse.example(TokenWindow(torch.zeros(12, dtype=torch.long), torch.zeros(5, 36).long()))
    model, window = coarse.build_model(), four_bars()
    with pytest.raises(ValueError, match="exceed"):
        coarse.generate(model, window.semantic[None, :2], window.acoustic[None, :Q, :9])


@pytest.mark.parametrize(("kind", "layout"), STAGES, ids=STAGE_IDS)
def test_configs_round_trip_through_json(kind, layout) -> None:
    config = make_stage(kind, layout).config
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(type(config), data) == config
    with pytest.raises(ConfigError, match="unknown"):
        config_from_dict(type(config), {**data, "temprature": 1.0})


@pytest.mark.parametrize("layout", ["flat", "delay"])
def test_semantic_dropout_trains_the_acoustic_only_ablation(layout) -> None:
    """With semantic_dropout, about that share of coarse examples start at SEP (no semantic
    tokens, no loss change on the codes), and generation without semantics continues the
    prompt's coarse codes at frame P."""
    torch.manual_seed(0)
    window = four_bars()
    plain = make_stage("coarse", layout).example(window)
    stage = make_stage("coarse", layout, semantic_dropout=0.3)
    lengths = [stage.example(window).inputs.shape[-1] for _ in range(400)]
    n_sem = window.semantic.shape[0]
    assert set(lengths) == {plain.inputs.shape[-1], plain.inputs.shape[-1] - n_sem}
    dropped = sum(length < plain.inputs.shape[-1] for length in lengths) / len(lengths)
    assert 0.22 < dropped < 0.38
    model = stage.build_model().eval()
    prompt = window.acoustic[None, :Q, :18]
    out = stage.generate(model, None, prompt, 6, GREEDY)
    assert out.shape == (1, Q, 6)
    assert out.min() >= 0 and out.max() < V
    with pytest.raises(ValueError, match="n_new"):
        stage.generate(model, None, prompt)
    with pytest.raises(ConfigError, match="semantic_dropout"):
        make_stage("coarse", layout, semantic_dropout=1.0)
