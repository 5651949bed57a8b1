"""The static-shape decoding step (server/model/static_step.py, static_cache.py): the same
logits as `Decoder.step` step after step (uniform and ragged batches, flat and column decoders,
float32 and bf16 weights), run eagerly and through the CPU stand-in of a CUDA graph; the same
tokens through the whole decode loops; the cache shared by row buckets, reused without leaking;
a step that dynamo traces as one graph, compiled once and replayed at every position; the modes
of CONTINUO_STATIC_STEP. The capture and replay plumbing and the server's warm-up:
tests/test_step_graph.py."""

from __future__ import annotations

import copy

import pytest
import torch

from continuo.server.errors import ConfigError
from continuo.server.model.column_decoder import ColumnDecoder
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.generate import (
    ColumnIds,
    DecodeState,
    decode_column_rows,
    decode_token_rows,
    feed,
    prepare_rows,
)
from continuo.server.model.precision import with_precision
from continuo.server.model.sampling import SamplingParams
from continuo.server.model.static_cache import bucket_len, bucket_rows, row_buckets
from continuo.server.model.static_step import (
    ENV_VAR,
    StaticStep,
    cuda_graph_compiler,
    static_step_for,
    use_static_step,
)
from continuo.server.model.step_graph import EagerGraph

PARAMS = [SamplingParams(0.0), SamplingParams(1.0, top_k=5), SamplingParams(0.8, top_p=0.9),
          SamplingParams(1.3)]
SEEDS = [11, 22, 33, 44]
N_ROWS = 4  # column rows: 3 predicted levels + 1 conditioning row
FLAT_VOCAB, COLUMN_VOCAB = 48, 40
dynamo = pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(),
                            reason="torch dynamo is not supported here")


def sharp(model: Decoder, seed: int, precision: str = "float32") -> Decoder:
    """Random weights large enough that logits are peaked and attention matters (at the usual
    N(0, 0.02) init a wrong mask or position would hardly show)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.4)
    return with_precision(model.eval(), precision)


def flat(precision: str = "float32", **overrides: int) -> Decoder:
    torch.manual_seed(0)
    return sharp(Decoder(DecoderConfig.tiny(vocab_size=FLAT_VOCAB, **overrides)), 1, precision)


def columns(precision: str = "float32") -> ColumnDecoder:
    torch.manual_seed(0)
    config = DecoderConfig.tiny(vocab_size=COLUMN_VOCAB, n_kv_heads=1)  # grouped heads too
    return sharp(ColumnDecoder(config, n_levels=3, level_vocab_size=12), 2, precision)


def gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def prefixes_for(model: Decoder, lengths: list[int], seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    shape = (lambda n: (N_ROWS, n)) if isinstance(model, ColumnDecoder) else (lambda n: (n,))
    device = model.tok_emb.weight.device
    return [torch.randint(0, vocab, shape(n), generator=g).to(device) for n in lengths]


def random_position(model: Decoder, n_rows: int, g: torch.Generator) -> torch.Tensor:
    """One position of random tokens: [B, 1] ids or [B, R, 1] columns."""
    shape = (n_rows, N_ROWS, 1) if isinstance(model, ColumnDecoder) else (n_rows, 1)
    tokens = torch.randint(0, model.config.vocab_size, shape, generator=g)
    return tokens.to(model.tok_emb.weight.device)


def stepper_of(model: Decoder, mode: str) -> StaticStep:
    """A static step run eagerly ("eager") or captured into the CPU stand-in of a CUDA graph
    ("graph")."""
    return StaticStep(model, graphs=EagerGraph if mode == "graph" else None)


def prepared(model: Decoder, prefixes: list[torch.Tensor], n_new: int,
             stepper: StaticStep | None) -> DecodeState:
    use_static_step(model, stepper)
    return prepare_rows(model, prefixes, n_new)


def assert_steps_agree(model: Decoder, lengths: list[int], n_steps: int, tol: float,
                       stepper: StaticStep | None = None) -> None:
    """After the same prefill, n_steps fed positions give the static step the logits of
    Decoder.step (the eager feed) at every step."""
    prefixes = prefixes_for(model, lengths)
    static = prepared(model, prefixes, n_steps, stepper or StaticStep(model))
    eager = prepared(model, prefixes, n_steps, None)
    assert static.static is not None and eager.static is None
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(n_steps):
            tokens = random_position(model, len(lengths), g)
            static, eager = feed(model, static, tokens), feed(model, eager, tokens)
            torch.testing.assert_close(static.logits, eager.logits, atol=tol, rtol=tol)
    assert static.cache.length == eager.cache.length


def test_buckets_round_rows_and_lengths_up() -> None:
    assert [bucket_rows(n) for n in (1, 2, 3, 5, 8, 9, 16, 17, 40)] == [
        1, 2, 4, 8, 8, 16, 16, 32, 48]
    assert row_buckets(3) == [1, 2, 4]
    assert row_buckets(16) == [1, 2, 4, 8, 16]
    assert row_buckets(40) == [1, 2, 4, 8, 16, 32, 48]
    assert [bucket_len(n, 4096) for n in (1, 256, 257, 1000, 4096)] == [256, 256, 512, 1024,
                                                                        4096]
    assert bucket_len(300, 300) == 300  # capped at max_seq_len
    with pytest.raises(ConfigError, match="max_len"):
        bucket_len(301, 300)
    with pytest.raises(ConfigError, match="row"):
        bucket_rows(0)


@pytest.mark.parametrize(("kind", "lengths", "precision"), [
    ("flat", [9, 9, 9], "float32"),  # uniform
    ("flat", [5, 9, 2], "float32"),  # ragged: starts mask each row's padding
    ("columns", [6, 6], "float32"),
    ("columns", [3, 7, 7, 1, 4], "float32"),
    ("flat", [5, 9, 2], "mixed"),  # bfloat16 Linear weights
    ("columns", [3, 7, 4], "bf16"),
])
@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_static_logits_equal_decoder_step(kind: str, lengths: list[int], precision: str,
                                          mode: str) -> None:
    model = flat(precision) if kind == "flat" else columns(precision)
    # float32: as exact as attention over more (masked) keys allows; bfloat16 weights: the same
    # rounding unless a tiny difference crosses a bfloat16 step (measured ~1e-6 here).
    assert_steps_agree(model, lengths, 12, 1e-5 if precision == "float32" else 1e-4,
                       stepper_of(model, mode))


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_a_cut_cache_goes_on_from_where_it_was_cut(mode: str) -> None:
    """truncate (roll back) between steps: the device position follows the cache's length."""
    model = flat()
    prefixes = prefixes_for(model, [4, 8])
    static = prepared(model, prefixes, 10, stepper_of(model, mode))
    eager = prepared(model, prefixes, 10, None)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i in range(8):
            if i == 4:
                for state in (static, eager):
                    state.cache.truncate(state.cache.length - 3)
            tokens = random_position(model, 2, g)
            static, eager = feed(model, static, tokens), feed(model, eager, tokens)
            torch.testing.assert_close(static.logits, eager.logits, atol=1e-5, rtol=1e-5)


def test_a_reused_bucket_does_not_leak_the_last_decode() -> None:
    """The second decode on a bucket's cache (shorter, ragged prompts) sees none of what the
    first wrote there; its padding rows and old positions are masked. The 2-row bucket reads
    the first rows of the same cache, with what the 4-row decodes left there."""
    model = flat()
    stepper = stepper_of(model, "graph")
    assert_steps_agree(model, [20, 20, 20], 6, 1e-5, stepper)
    assert_steps_agree(model, [2, 7, 1], 6, 1e-5, stepper)
    assert_steps_agree(model, [3, 30], 6, 1e-5, stepper)
    assert stepper.cache.rows == 4 and stepper.max_len == 256  # one cache for every bucket
    assert stepper.captures == 2  # rows 3 → bucket 4 (twice), rows 2 → bucket 2


def test_a_decode_takes_the_cache_while_it_lives_or_goes_eager() -> None:
    """One decode at a time holds the cache (all row buckets share it); a second one, or one
    longer than the length bucket, decodes eagerly; more rows grow the cache."""
    model = flat(max_seq_len=600)
    stepper = StaticStep(model, max_len=300)
    assert stepper.max_len == 512  # the length bucket, a multiple of 256
    first = stepper.borrow(3, 40)
    assert first is not None and first.cache.batch_size == 4 and first.cache.max_len == 512
    assert stepper.borrow(3, 100) is None  # same bucket, still in use
    assert stepper.borrow(1, 100) is None  # another bucket of the same cache
    with pytest.raises(ConfigError, match="in use"):
        stepper.warm_up(4)
    del first
    assert stepper.borrow(2, 513) is None  # longer than the length bucket: eager
    second = stepper.borrow(5, 512)
    assert second is not None and second.cache.batch_size == 8 and stepper.cache.rows == 8
    assert stepper.cache.nbytes == 2 * second.cache.keys.nbytes


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_decode_token_rows_gives_the_same_tokens(mode: str) -> None:
    model = flat()
    prefixes = prefixes_for(model, [5, 9, 2, 9])
    allowed = [(0, FLAT_VOCAB)] * 14
    n_new = [14, 3, 9, 0]
    use_static_step(model, stepper_of(model, mode))
    static = decode_token_rows(model, prefixes, allowed, n_new, PARAMS, gens(SEEDS))
    use_static_step(model, None)
    eager = decode_token_rows(model, prefixes, allowed, n_new, PARAMS, gens(SEEDS))
    assert [t.tolist() for t in static] == [t.tolist() for t in eager]
    assert [len(t) for t in static] == n_new


@pytest.mark.parametrize("mode", ["eager", "graph"])
def test_decode_column_rows_gives_the_same_tokens(mode: str) -> None:
    model = columns()
    ids = ColumnIds(offset=4, level_vocab=12, pad_id=0, n_rows=N_ROWS)
    g = torch.Generator().manual_seed(9)
    known = [torch.randint(0, 12, (3, p), generator=g) for p in (4, 2, 6)]
    prefixes = prefixes_for(model, [5, 3, 7])
    n_new = [8, 2, 5]
    use_static_step(model, stepper_of(model, mode))
    static = decode_column_rows(model, prefixes, known, n_new, ids, PARAMS[1:], gens(SEEDS[1:]))
    use_static_step(model, None)
    eager = decode_column_rows(model, prefixes, known, n_new, ids, PARAMS[1:], gens(SEEDS[1:]))
    assert [t.tolist() for t in static] == [t.tolist() for t in eager]


class CountingBackend:
    """A torch.compile backend that counts the graphs dynamo hands it and notes what their
    in-place writes write into, then runs them with aot_eager (functionalized, as inductor sees
    them, but without generating code)."""

    def __init__(self) -> None:
        self.graphs = 0
        self.written: list[tuple[str, str]] = []  # (op of the written node, its name)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        self.graphs += 1
        for node in gm.graph.nodes:
            name = getattr(node.target, "__name__", str(node.target))
            if name == "setitem" or (node.op == "call_method" and name.endswith("_")):
                self.written.append((node.args[0].op, node.args[0].name))
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)

    def compiler(self, fn):
        return torch.compile(fn, backend=self, fullgraph=True, dynamic=False)


@dynamo
def test_the_step_is_one_graph_compiled_once_for_every_position() -> None:
    """fullgraph=True fails on any graph break (a host sync, a data-dependent branch); one
    compile for 12 steps and a second decode on the same bucket means the position is never a
    Python int baked into the graph. A new bucket compiles once more, and only once."""
    torch._dynamo.reset()
    model = flat()
    backend = CountingBackend()
    stepper = StaticStep(model, compiler=backend.compiler)
    stepper.reserve(max_rows=8)  # the cache never grows here (growing drops what was compiled)
    assert_steps_agree(model, [5, 9, 2], 12, 1e-5, stepper)
    assert backend.graphs == 1
    assert_steps_agree(model, [3, 3, 6], 10, 1e-5, stepper)  # same bucket: (4 rows, 256)
    assert backend.graphs == 1
    assert_steps_agree(model, [2, 4, 4, 3, 1], 3, 1e-5, stepper)  # (8 rows, 256)
    assert backend.graphs == 2
    assert stepper.captures == 2 and stepper.mode == "compile"
    # Every write goes into a whole input (2 per layer, then the position), never into a view
    # of one: inductor does those in place, while a write through a view (keys[layer]...)
    # became a copy of the layer's whole cache every step.
    n_writes = 2 * model.config.n_layers + 1
    assert len(backend.written) == 2 * n_writes
    assert {op for op, _ in backend.written} == {"placeholder"}


@dynamo
def test_the_column_step_traces_without_graph_breaks() -> None:
    torch._dynamo.reset()
    model = columns("bf16")
    backend = CountingBackend()
    assert_steps_agree(model, [3, 5], 4, 1e-4, StaticStep(model, compiler=backend.compiler))
    assert backend.graphs == 1


def test_selection_eager_on_a_cpu_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTINUO_STATIC_STEP: unset (eager Decoder.step on a CPU), off/0, graph/1, eager,
    compile; anything else is a ConfigError naming the variable and the values."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert static_step_for(flat()) is None
    for setting, mode in [("1", "graph"), ("graph", "graph"), (" Eager ", "eager"),
                          ("compile", "compile")]:
        monkeypatch.setenv(ENV_VAR, setting)
        model = flat()
        stepper = static_step_for(model)
        assert isinstance(stepper, StaticStep) and stepper.mode == mode, setting
        assert static_step_for(model) is stepper  # chosen once, kept on the model
    monkeypatch.setenv(ENV_VAR, "graph")
    model = flat()
    assert prepare_rows(model, prefixes_for(model, [3]), 2).static is not None
    for setting in ("0", "off"):
        monkeypatch.setenv(ENV_VAR, setting)
        assert static_step_for(flat()) is None
    monkeypatch.setenv(ENV_VAR, "yes")
    with pytest.raises(ConfigError, match=f"{ENV_VAR} must be one of off, graph, eager, compile"):
        static_step_for(flat())
    with pytest.raises(ConfigError, match="not both"):
        StaticStep(flat(), graphs=EagerGraph, compiler=torch.compile)


def test_a_copied_model_gets_its_own_stepper() -> None:
    model = flat()
    use_static_step(model, StaticStep(model, graphs=EagerGraph, max_len=100))
    twin = copy.deepcopy(model)
    assert static_step_for(twin) is not static_step_for(model)
    assert static_step_for(twin).model is twin and static_step_for(twin).mode == "graph"
    assert static_step_for(twin).max_len == 256
    assert_steps_agree(twin, [4, 6], 3, 1e-5, static_step_for(twin))


def test_a_static_step_checks_its_input() -> None:
    model = flat()
    state = prepared(model, prefixes_for(model, [4, 4]), 3, StaticStep(model))
    with pytest.raises(ConfigError, match="2 rows"):
        feed(model, state, torch.zeros(3, 1, dtype=torch.long))


@dynamo
def test_warm_up_compiles_the_buckets_a_decode_then_uses() -> None:
    torch._dynamo.reset()
    model = columns()
    backend = CountingBackend()
    stepper = StaticStep(model, compiler=backend.compiler)
    assert stepper.warm_up(3, token_shape=(N_ROWS, 1)) == 3  # buckets of 1, 2 and 4 rows
    assert backend.graphs == 3
    assert_steps_agree(model, [2, 5, 5, 1], 5, 1e-5, stepper)  # after the warm-up's dummies
    assert_steps_agree(model, [2], 5, 1e-5, stepper)
    assert backend.graphs == 3 and stepper.warm_up(2, token_shape=(N_ROWS, 1)) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_compiled_step_is_a_cuda_graph() -> None:
    """The opt-in compiled step on CUDA: inductor with CUDA graphs (none skipped: the cache, the
    position and the tokens are static inputs), the logits of the eager step."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = flat().cuda()
    stepper = StaticStep(model, compiler=cuda_graph_compiler)
    assert_steps_agree(model, [5, 9, 2], 12, 1e-4, stepper)
    assert counters["inductor"]["cudagraph_skips"] == 0
