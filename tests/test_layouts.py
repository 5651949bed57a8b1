"""Token layouts: round trips for any shape, the documented orders, pads, and causality."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from continuo.server.errors import ConfigError
from continuo.server.model import layouts as L

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def code_grids(draw: st.DrawFn, max_k: int = 5, max_f: int = 8) -> tuple[torch.Tensor, int]:
    """(codes [B, K, F] int64 in [0, V), V) for any small B, K ≥ 1, F ≥ 0 and any V ≥ 1."""
    b = draw(st.integers(0, 3))
    k = draw(st.integers(1, max_k))
    f = draw(st.integers(0, max_f))
    v = draw(st.one_of(st.integers(1, 4), st.integers(1, 2**40)))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32)))
    return torch.randint(0, v, (b, k, f), generator=gen, dtype=torch.long), v


def _example() -> torch.Tensor:
    """The docstring's K = 3, F = 4 grid: code `fk` = 10·f + k, so `21` is frame 2 of level 1."""
    f = torch.arange(4)[None, :]
    k = torch.arange(3)[:, None]
    return (10 * f + k)[None]  # [1, 3, 4]


# ---- offsets -----------------------------------------------------------------------------------


def test_offsets_are_exclusive_cumulative_sums() -> None:
    assert L.offsets([1024, 2048, 8]) == [0, 1024, 3072]
    assert L.offsets([5]) == [0]
    assert L.offsets([]) == []


@pytest.mark.parametrize("sizes", [[1024, 0], [-3], [2.5], [True], ["8"]])
def test_offsets_reject_bad_vocabulary_sizes(sizes: list) -> None:
    with pytest.raises(ConfigError, match="vocabulary size of stream"):
        L.offsets(sizes)


@given(grid=code_grids(), offset=st.integers(0, 2**40))
@SETTINGS
def test_stream_offset_round_trips(grid: tuple[torch.Tensor, int], offset: int) -> None:
    codes, v = grid
    ids = L.add_offset(codes, offset, v)
    if ids.numel():
        assert offset <= int(ids.min()) and int(ids.max()) < offset + v
    assert torch.equal(L.remove_offset(ids, offset, v), codes)


def test_stream_offsets_check_the_range() -> None:
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        L.add_offset(torch.tensor([0, 8]), 100, 8)
    with pytest.raises(ValueError, match=r"\[100, 108\)"):
        L.remove_offset(torch.tensor([100, 99]), 100, 8)
    with pytest.raises(ValueError, match="integer tensor"):
        L.add_offset(torch.tensor([0.0]), 0, 8)


def test_codebook_offsets_reject_an_id_of_another_level() -> None:
    ids = L.add_codebook_offsets(torch.zeros(2, 3, 4, dtype=torch.long), 10)
    ids[1, 2, 3] = 5  # a level-0 id where level 2 belongs
    with pytest.raises(ValueError, match="item 1 level 2 frame 3 holds 5"):
        L.remove_codebook_offsets(ids, 10)


# ---- flat --------------------------------------------------------------------------------------


def test_flat_matches_the_docstring_order() -> None:
    v = 100
    seq = L.flatten(_example(), v)
    # 00 01 02 10 11 12 20 21 22 30 31 32, level k shifted by k·V
    expected = [10 * f + k + k * v for f in range(4) for k in range(3)]
    assert seq.tolist() == [expected]
    assert seq.dtype == torch.long


@given(grid=code_grids())
@SETTINGS
def test_flat_round_trips(grid: tuple[torch.Tensor, int]) -> None:
    codes, v = grid
    b, k, f = codes.shape
    seq = L.flatten(codes, v)
    assert seq.shape == (b, L.flat_steps(f, k))
    assert torch.equal(L.unflatten(seq, k, v), codes)


@given(grid=code_grids())
@SETTINGS
def test_flat_ids_of_level_k_lie_in_their_own_slice(grid: tuple[torch.Tensor, int]) -> None:
    codes, v = grid
    k_total = codes.shape[1]
    seq = L.flatten(codes, v)
    for position in range(seq.shape[1]):
        k = L.flat_codebook(position, k_total)
        column = seq[:, position]
        assert bool(((column >= k * v) & (column < (k + 1) * v)).all())
        assert torch.equal(column - k * v, codes[:, k, position // k_total])


@given(grid=code_grids(), data=st.data())
@SETTINGS
def test_flat_is_causal(grid: tuple[torch.Tensor, int], data: st.DataObject) -> None:
    """The first n frames are the first n·K tokens; any prefix decodes to its complete frames."""
    codes, v = grid
    k, f = codes.shape[1:]
    seq = L.flatten(codes, v)
    n = data.draw(st.integers(0, f))
    assert torch.equal(L.flatten(codes[..., :n], v), seq[:, : L.flat_steps(n, k)])
    m = data.draw(st.integers(0, seq.shape[1]))  # any length, possibly mid-frame
    assert L.flat_frames(m, k) == m // k
    assert torch.equal(L.unflatten(seq[:, :m], k, v), codes[..., : m // k])


def test_unflatten_drops_the_incomplete_frame_and_checks_ids() -> None:
    seq = L.flatten(_example(), 100)[:, :7]  # two frames and one token of the third
    assert torch.equal(L.unflatten(seq, 3, 100), _example()[..., :2])
    with pytest.raises(ValueError, match="level 1"):
        L.unflatten(torch.tensor([[0, 0, 200]]), 3, 100)  # level 1 holds a level-0 id
    with pytest.raises(ValueError, match="2 dimensions"):
        L.unflatten(torch.zeros(1, 1, 3, dtype=torch.long), 3, 100)


# ---- delay -------------------------------------------------------------------------------------


def test_delay_matches_the_docstring_matrix() -> None:
    p = -1
    assert L.delay(_example(), p).tolist() == [
        [
            [0, 10, 20, 30, p, p],
            [p, 1, 11, 21, 31, p],
            [p, p, 2, 12, 22, 32],
        ]
    ]
    assert L.delay_frame_index(3, 6).tolist() == [
        [0, 1, 2, 3, 4, 5],
        [-1, 0, 1, 2, 3, 4],
        [-2, -1, 0, 1, 2, 3],
    ]


@given(grid=code_grids(), pad=st.integers(-5, 2**41))
@SETTINGS
def test_delay_round_trips(grid: tuple[torch.Tensor, int], pad: int) -> None:
    codes, _ = grid
    b, k, f = codes.shape
    delayed = L.delay(codes, pad)
    assert delayed.shape == (b, k, L.delay_steps(f, k))
    assert L.delayed_frames(delayed.shape[-1], k) == f
    assert torch.equal(L.undelay(delayed), codes)


@given(grid=code_grids())
@SETTINGS
def test_delay_pads_exactly_outside_the_codes(grid: tuple[torch.Tensor, int]) -> None:
    """Pads where the frame index is < 0 or ≥ F: level k has k leading and K-1-k trailing pads."""
    codes, v = grid
    b, k, f = codes.shape
    pad = v  # one past the vocabulary: never a code
    delayed = L.delay(codes, pad)
    index = L.delay_frame_index(k, delayed.shape[-1])
    holds_code = (index >= 0) & (index < f)
    assert bool((delayed[:, ~holds_code] == pad).all())
    assert bool((delayed[:, holds_code] < v).all())
    if b and f:
        assert bool((delayed[:, 1:, 0] == pad).all())  # first column: only level 0 has begun
        assert torch.equal(delayed[:, 0, 0], codes[:, 0, 0])
        assert bool((delayed[:, :-1, -1] == pad).all())  # last: only the top level's last frame
        assert torch.equal(delayed[:, -1, -1], codes[:, -1, -1])
    assert int((delayed == pad).sum()) == b * k * (k - 1)


@given(grid=code_grids(), data=st.data())
@SETTINGS
def test_delay_is_causal(grid: tuple[torch.Tensor, int], data: st.DataObject) -> None:
    """Column s holds frames ≤ s only, and the first n frames are complete after n + K - 1 columns.

    (1) delay(codes)[..., :n] == delay(codes[..., :n])[..., :n] for n ≤ F: the first n columns
        depend on the first n frames and nothing later, so a prompt fixes a prefix of columns;
    (2) undelay of the first s columns == codes[..., :max(s - K + 1, 0)]: a decoder that has
        produced s columns owns exactly that many complete frames.
    """
    codes, v = grid
    k, f = codes.shape[1:]
    delayed = L.delay(codes, v)
    n = data.draw(st.integers(0, f))
    assert torch.equal(delayed[..., :n], L.delay(codes[..., :n], v)[..., :n])
    assert torch.equal(L.undelay(delayed[..., : L.delay_steps(n, k)]), codes[..., :n])
    s = data.draw(st.integers(0, delayed.shape[-1]))
    assert torch.equal(L.undelay(delayed[..., :s]), codes[..., : L.delayed_frames(s, k)])


@given(k=st.integers(1, 6), f=st.integers(1, 8))
@SETTINGS
def test_delay_puts_lower_levels_of_a_frame_at_earlier_steps(k: int, f: int) -> None:
    """Level k of frame t is predicted after levels 0..k-1 of frame t (the RVQ dependency)."""
    index = L.delay_frame_index(k, L.delay_steps(f, k))
    for frame in range(f):
        steps = [int((index[level] == frame).nonzero().item()) for level in range(k)]
        assert steps == sorted(set(steps))  # strictly increasing with the level


@given(grid=code_grids(), junk=st.integers(0, 2**32))
@SETTINGS
def test_undelay_never_reads_a_pad_position(grid: tuple[torch.Tensor, int], junk: int) -> None:
    """Whatever a decoder wrote at pad positions, undelay returns the codes."""
    codes, _ = grid
    delayed = L.delay(codes, 0)
    index = L.delay_frame_index(codes.shape[1], delayed.shape[-1])
    pads = (index < 0) | (index >= codes.shape[-1])
    gen = torch.Generator().manual_seed(junk)
    noise = torch.randint(-(2**40), 2**40, delayed.shape, generator=gen)
    assert torch.equal(L.undelay(torch.where(pads, noise, delayed)), codes)


@given(grid=code_grids())
@SETTINGS
def test_delay_with_codebook_offsets_round_trips(grid: tuple[torch.Tensor, int]) -> None:
    """The documented order: offsets, then delay (pad = K·V, past every id); undelay, remove."""
    codes, v = grid
    k = codes.shape[1]
    delayed = L.delay(L.add_codebook_offsets(codes, v), pad_id=k * v)
    assert torch.equal(L.remove_codebook_offsets(L.undelay(delayed), v), codes)


def test_delay_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="3 dimensions"):
        L.delay(torch.zeros(3, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="integer tensor"):
        L.delay(torch.zeros(1, 2, 4), 0)
    with pytest.raises(ValueError, match="K >= 1"):
        L.delay(torch.zeros(1, 0, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="K >= 1"):
        L.undelay(torch.zeros(1, 0, 4, dtype=torch.long))
