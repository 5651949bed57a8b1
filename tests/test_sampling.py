"""Sampling: greedy, top-k, top-p, the temperature-1 distribution, seeds, allowed ids, params."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from continuo.server.errors import ConfigError
from continuo.server.model.sampling import SamplingParams, sample


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draws(logits: torch.Tensor, params: SamplingParams, n: int, seed: int = 0) -> torch.Tensor:
    """n independent draws from one row of logits [V] → ids [n] (one batched call)."""
    return sample(logits.expand(n, -1), params, _gen(seed))


# ---- params ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
    ],
)
def test_params_reject_out_of_range_values(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"sampling {key}"):
        SamplingParams(**kwargs)


def test_params_accept_the_edges_and_revalidate_on_replace() -> None:
    edge = SamplingParams(temperature=0, top_k=0, top_p=1)
    assert edge.greedy and not SamplingParams(temperature=1e-3).greedy
    assert SamplingParams(top_p=1e-9).top_p == 1e-9
    with pytest.raises(ConfigError, match="top_p"):
        dataclasses.replace(edge, top_p=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        edge.top_k = 3  # type: ignore[misc]


# ---- greedy and top-k --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 300), (4, 3, 300)])
def test_greedy_equals_argmax(shape: tuple[int, ...]) -> None:
    logits = torch.randn(shape)
    tokens = sample(logits, SamplingParams(temperature=0), _gen())
    assert tokens.shape == shape[:-1] and tokens.dtype == torch.long
    assert torch.equal(tokens, logits.argmax(-1))


def test_greedy_picks_the_first_of_tied_maxima_like_argmax() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 3.0], [5.0, 5.0, 5.0, 5.0]])
    tokens = sample(logits, SamplingParams(temperature=0), _gen())
    assert tokens.tolist() == logits.argmax(-1).tolist() == [1, 0]


def test_greedy_rows_in_a_sampled_batch_still_pick_the_first_tied_maximum() -> None:
    logits = torch.zeros(2, 300)
    logits[0, [250, 40, 7, 199]] = 3.0  # four tied maxima; argmax says 7
    params = [SamplingParams(temperature=0), SamplingParams(top_k=5)]
    for seed in range(5):
        assert int(sample(logits, params, _gen(seed))[0]) == 7


def test_a_tiny_top_p_keeps_the_most_likely_id() -> None:
    logits = torch.randn(200, 40)
    tokens = sample(logits, SamplingParams(temperature=5.0, top_p=1e-9), _gen())
    assert torch.equal(tokens, logits.argmax(-1))


@pytest.mark.parametrize("temperature", [1e-6, 0.1, 1.0, 10.0, 1e4])
def test_top_k_1_is_greedy_at_any_temperature(temperature: float) -> None:
    logits = torch.randn(64, 3, 50)
    params = SamplingParams(temperature=temperature, top_k=1)
    assert torch.equal(sample(logits, params, _gen()), logits.argmax(-1))


def test_top_k_draws_only_the_k_best_and_all_of_them() -> None:
    logits = torch.randn(50)
    best = set(torch.topk(logits, 5).indices.tolist())
    drawn = _draws(logits, SamplingParams(temperature=5.0, top_k=5), 4000)
    assert set(drawn.tolist()) == best  # at temperature 5 the 5 are near-uniform: each is seen


# ---- top-p -------------------------------------------------------------------------------------

# A hand-made distribution, shuffled so the ids are not in probability order.
_PROBS = {3: 0.5, 0: 0.3, 2: 0.15, 1: 0.05}
_LOGITS = torch.log(torch.tensor([_PROBS[i] for i in range(4)]))


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.2, {3}),
        (0.5, {3}),  # 0.5 alone reaches p = 0.5
        (0.51, {3, 0}),
        (0.8, {3, 0}),  # 0.5 + 0.3 reaches 0.8 (up to float rounding)
        (0.81, {3, 0, 2}),
        (0.95, {3, 0, 2}),
        (0.96, {3, 0, 2, 1}),
        (1.0, {3, 0, 2, 1}),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p: float, kept: set[int]) -> None:
    drawn = _draws(_LOGITS, SamplingParams(top_p=top_p), 3000)
    assert set(drawn.tolist()) == kept


def test_top_p_counts_a_mass_equal_to_p_despite_float_rounding() -> None:
    """0.65 + 0.3 sums to 0.94999993 in float32 softmax outputs: it still reaches p = 0.95."""
    logits = torch.log(torch.tensor([0.05, 0.65, 0.3]))
    drawn = _draws(logits, SamplingParams(top_p=0.95), 3000)
    assert set(drawn.tolist()) == {1, 2}


@pytest.mark.parametrize(("top_p", "kept"), [(0.6, {3}), (0.63, {3, 0}), (1.0, {3, 0})])
def test_top_p_applies_to_the_top_k_renormalised(top_p: float, kept: set[int]) -> None:
    """After top_k = 2 the mass is 0.625 / 0.375, so p = 0.6 keeps one id and 0.63 both."""
    drawn = _draws(_LOGITS, SamplingParams(top_k=2, top_p=top_p), 2000)
    assert set(drawn.tolist()) == kept


# ---- the distribution --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_draws_follow_the_softmax_at_the_temperature(temperature: float) -> None:
    """Pearson's chi-square over 20,000 seeded draws of an 8-id distribution, 7 degrees of
    freedom: 24.3 is the 0.1% critical value. A sampler off by a few percent on one id fails."""
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.2, 1.5])
    n = 20_000
    drawn = _draws(logits, SamplingParams(temperature=temperature), n, seed=123)
    observed = torch.bincount(drawn, minlength=8).double()
    expected = torch.softmax(logits.double() / temperature, -1) * n
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 24.3, (chi2, observed.tolist(), expected.tolist())


def test_a_skewed_sampler_would_fail_the_chi_square() -> None:
    """The test above can fail: draws from the softmax at the wrong temperature are rejected."""
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.2, 1.5])
    n = 20_000
    drawn = _draws(logits, SamplingParams(temperature=1.2), n, seed=123)
    observed = torch.bincount(drawn, minlength=8).double()
    expected = torch.softmax(logits.double(), -1) * n
    assert float(((observed - expected) ** 2 / expected).sum()) > 24.3


# ---- seeds and rows ----------------------------------------------------------------------------


def test_same_seed_same_tokens_and_another_seed_other_tokens() -> None:
    logits = torch.zeros(64, 2, 1000)  # uniform: every draw is pure chance
    params = SamplingParams(temperature=1.0, top_p=0.9)
    first = sample(logits, params, _gen(7))
    assert torch.equal(first, sample(logits, params, _gen(7)))
    assert not torch.equal(first, sample(logits, params, _gen(8)))


def test_sampling_never_touches_the_global_rng() -> None:
    logits = torch.randn(4, 100)
    state = torch.get_rng_state()
    sample(logits, SamplingParams(), _gen())
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    "neighbours",
    [
        [SamplingParams(temperature=0), SamplingParams(top_k=1)],
        [SamplingParams(top_p=0.5), SamplingParams()],
        [SamplingParams(top_k=7, temperature=3.0), SamplingParams(temperature=0.2)],
    ],
)
def test_per_row_params_and_rows_that_ignore_their_neighbours(
    neighbours: list[SamplingParams],
) -> None:
    """One params per batch item (shared by its K codebooks); an unfiltered row draws the same
    token whatever its neighbours ask for (the noise is per id, only candidates change)."""
    logits = torch.randn(3, 2, 200)
    rows = [SamplingParams(), *neighbours]
    tokens = sample(logits, rows, _gen(3))
    alone = sample(logits, [SamplingParams()] * 3, _gen(3))
    assert torch.equal(tokens[0], alone[0])
    for item, params in enumerate(neighbours, start=1):
        if params.greedy or params.top_k == 1:
            assert torch.equal(tokens[item], logits[item].argmax(-1))
    with pytest.raises(ValueError, match="sequence of 3"):
        sample(logits, rows[:2], _gen())


def test_one_generator_per_job_makes_each_job_reproducible_alone() -> None:
    """With a generator per batch item, item b's tokens are those it would get sampled alone."""
    logits = torch.randn(3, 4, 100)
    rows = [SamplingParams(top_p=0.9), SamplingParams(temperature=0), SamplingParams(top_k=20)]
    seeds = [11, 12, 13]
    together = sample(logits, rows, [_gen(seed) for seed in seeds])
    for item, (params, seed) in enumerate(zip(rows, seeds, strict=True)):
        alone = sample(logits[item : item + 1], params, _gen(seed))
        assert torch.equal(together[item], alone[0])
    greedy_gen = _gen(12)
    sample(logits, rows, [_gen(11), greedy_gen, _gen(13)])
    assert torch.equal(greedy_gen.get_state(), _gen(12).get_state())  # greedy drew nothing
    with pytest.raises(ValueError, match="sequence of 3"):
        sample(logits, rows, [_gen(1), _gen(2)])


# ---- allowed ids -------------------------------------------------------------------------------


def test_allowed_range_restricts_every_draw() -> None:
    logits = torch.zeros(2000, 30)
    logits[:, :10] = 20.0  # the model loves ids outside the slice
    tokens = sample(logits, SamplingParams(temperature=2.0), _gen(), allowed=(10, 20))
    assert set(tokens.tolist()) == set(range(10, 20))
    greedy = sample(logits + torch.arange(30.0), SamplingParams(temperature=0), _gen(), (10, 20))
    assert bool((greedy == 19).all())


def test_allowed_mask_per_codebook() -> None:
    """A [K, V] mask gives each codebook its own slice, as the delay layout's stages need."""
    k_levels, v = 3, 8
    mask = torch.zeros(k_levels, k_levels * v, dtype=torch.bool)
    for k in range(k_levels):
        mask[k, k * v : (k + 1) * v] = True
    tokens = sample(torch.randn(500, k_levels, k_levels * v), SamplingParams(), _gen(), mask)
    level = tokens // v
    assert torch.equal(level, torch.arange(k_levels).expand_as(level))


def test_minus_infinity_logits_are_never_drawn() -> None:
    logits = torch.zeros(3000, 6)
    logits[:, ::2] = -math.inf
    tokens = sample(logits, SamplingParams(temperature=3.0, top_p=1.0), _gen())
    assert set(tokens.tolist()) == {1, 3, 5}


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        ((5, 5), "allowed range"),
        ((0, 11), "allowed range"),
        (torch.zeros(10, dtype=torch.bool), "no id"),
        (torch.ones(10, dtype=torch.long), "bool tensor"),
        (torch.ones(3, dtype=torch.bool), "does not broadcast"),
    ],
)
def test_bad_allowed_is_refused(allowed: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample(torch.randn(2, 10), SamplingParams(), _gen(), allowed)  # type: ignore[arg-type]


def test_bad_logits_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, V\] or \[B, K, V\]"):
        sample(torch.randn(10), SamplingParams(), _gen())
