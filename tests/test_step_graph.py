"""Capturing the static step into a graph and replaying it (server/model/step_graph.py,
static_step.py), and the server's warm-up (server/serve.py `warm_static_steps`).

On a CPU the graph is the stand-in (`EagerGraph`): the same static inputs, static output, warm-up
steps and resets as a CUDA graph, so what surrounds the torch.cuda calls is tested here: the
stand-in gives bit for bit what the static step computes eagerly, decode after decode in one
bucket (the position and the cache set afresh each time); a capture leaves every buffer as it
found it, even at a bucket's last position; a new batch size within a bucket captures nothing;
the server's warm-up captures exactly the buckets a stream's batches then use, and the stream's
tokens are those of the eager pipeline. The cache's size at the paper size is computed (on
torch's meta device). On a GPU (skipped without one): torch.cuda.CUDAGraph replays give the
eager step's logits, in several buckets sharing one memory pool, from another thread too."""

from __future__ import annotations

import logging
import threading
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
from server_fixtures import collect, start_server
from test_static_step import (
    FLAT_VOCAB,
    N_ROWS,
    PARAMS,
    SEEDS,
    assert_steps_agree,
    columns,
    flat,
    gens,
    prefixes_for,
    prepared,
    random_position,
)

from continuo.server.continuation import Continuation
from continuo.server.engine.stream import TokenStream
from continuo.server.model.decoder import Decoder, DecoderConfig
from continuo.server.model.generate import decode_token_rows, feed
from continuo.server.model.loading import new_stage
from continuo.server.model.static_cache import bucket_rows
from continuo.server.model.static_step import (
    ENV_VAR,
    StaticStep,
    static_step_for,
    use_static_step,
)
from continuo.server.model.step_graph import CudaGraphs, EagerGraph
from continuo.server.serve import _decode_shape, warm_up

SR = 24000
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class CountingGraphs:
    """A graph factory of stand-ins that counts captures and replays."""

    def __init__(self) -> None:
        self.captured = self.replayed = 0

    def __call__(self) -> EagerGraph:
        outer = self

        class Counted(EagerGraph):
            def capture(self, step, reset, warm_up_steps):  # type: ignore[no-untyped-def]
                outer.captured += 1
                return super().capture(step, reset, warm_up_steps)

            def replay(self) -> None:
                outer.replayed += 1
                super().replay()
        return Counted()


def test_the_stand_in_replays_the_eager_static_step_bit_for_bit() -> None:
    """Three decodes in the 4-row bucket (3 and 4 rows, other prompts and lengths), the last
    inside torch.inference_mode as a stream decodes: one capture, the same logits as the static
    step run eagerly at every step, within rounding of Decoder.step."""
    model = flat()
    graphs = CountingGraphs()
    replayed, plain = StaticStep(model, graphs=graphs), StaticStep(model)
    g = torch.Generator().manual_seed(4)
    for lengths, mode in [([5, 9, 2], torch.no_grad), ([30, 1, 7, 7], torch.no_grad),
                          ([3, 12, 4], torch.inference_mode)]:
        prefixes = prefixes_for(model, lengths, seed=len(lengths))
        with mode():
            a = prepared(model, prefixes, 8, replayed)
            b = prepared(model, prefixes, 8, plain)
            c = prepared(model, prefixes, 8, None)
            assert a.static is not None and b.static is not None
            for _ in range(8):
                tokens = random_position(model, len(lengths), g)
                a, b, c = feed(model, a, tokens), feed(model, b, tokens), feed(model, c, tokens)
                assert torch.equal(a.logits, b.logits)
                torch.testing.assert_close(a.logits, c.logits, atol=1e-5, rtol=1e-5)
        del a, b, c  # a decode holds its stepper's cache while it lives
    assert graphs.captured == 1 and replayed.captures == 1
    assert graphs.replayed == 3 * 8  # every step replays, the first one after its capture


def test_a_capture_puts_back_what_its_steps_wrote() -> None:
    """Each warm-up step and the capture start at the same position (reset after each, so the
    warm-up never runs past the cache's end); afterwards every buffer holds what it held."""
    model = columns()
    stepper = StaticStep(model, graphs=EagerGraph)
    stepper.reserve(max_rows=1)
    bucket = stepper.cache.bucket(1)
    tokens = stepper.cache.token_buffer((1, N_ROWS, 1), bucket.keys.device)
    with torch.no_grad():
        for tensor in (bucket.keys, bucket.values):
            tensor.normal_()
        bucket.starts.fill_(3)
        tokens.random_(0, model.config.vocab_size)
    before = [t.clone() for t in (bucket.keys, bucket.values, bucket.starts, tokens)]
    seen = []  # (position before, position after, entry at 0 changed) of every step run

    class Probe(EagerGraph):
        def capture(self, step, reset, warm_up_steps):  # type: ignore[no-untyped-def]
            def probed() -> torch.Tensor:
                start, entry = int(bucket.position), bucket.keys[:, :, :, 0].clone()
                out = step()
                seen.append((start, int(bucket.position),
                             not torch.equal(entry, bucket.keys[:, :, :, 0])))
                return out
            return super().capture(probed, reset, warm_up_steps)

    stepper.graphs = Probe
    assert stepper.warm_up(1, token_shape=(N_ROWS, 1)) == 1
    assert seen == [(0, 1, True)] * 4  # 3 warm-up steps and the capture
    after = (bucket.keys, bucket.values, bucket.starts, tokens)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(bucket.position) == 0


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_a_bucket_first_stepped_at_its_last_position(mode: str) -> None:
    """A bucket captured by a decode's first step at the cache's last position: the warm-up
    steps and the capture all write there (not past the end), and the step is the eager one."""
    model = flat()
    limit = model.config.max_seq_len
    stepper = StaticStep(model, graphs=EagerGraph if mode == "graph" else None)
    prefixes = prefixes_for(model, [limit - 1, 40])
    static, eager = prepared(model, prefixes, 1, stepper), prepared(model, prefixes, 1, None)
    assert static.static is not None and static.cache.free == 1
    tokens = random_position(model, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        static, eager = feed(model, static, tokens), feed(model, eager, tokens)
    torch.testing.assert_close(static.logits, eager.logits, atol=1e-5, rtol=1e-5)
    assert static.cache.length == limit and stepper.captures == (mode == "graph")


def test_a_new_batch_size_within_a_bucket_captures_nothing() -> None:
    model = flat()
    graphs = CountingGraphs()
    use_static_step(model, StaticStep(model, graphs=graphs))
    allowed = [(0, FLAT_VOCAB)] * 4
    captured = []
    for n_rows in (3, 4, 3, 2, 1, 4, 2):
        prefixes = prefixes_for(model, [6 + r for r in range(n_rows)])
        decode_token_rows(model, prefixes, allowed, [4] * n_rows, PARAMS[:n_rows],
                          gens(SEEDS[:n_rows]))
        captured.append(graphs.captured)
    assert captured == [1, 1, 1, 2, 3, 3, 3]  # buckets of 4, 2 and 1 rows, once each


def test_the_longest_decode_of_each_stage_and_its_token_shape() -> None:
    """What the server's warm-up reserves and captures per stage (a window's positions)."""
    tokenizers = {"codec": {"frame_rate": 75, "n_codebooks": 8, "codebook_size": 1024},
                  "semantic": {"frame_rate": 25, "vocab_size": 512}}
    shapes = {(name, layout): _decode_shape(new_stage(name, tokenizers, "small", layout))
              for name in ("semantic", "coarse", "fine") for layout in ("flat", "delay")}
    assert shapes == {
        ("semantic", "flat"): (750, (1,)), ("semantic", "delay"): (750, (1,)),  # 30 s × 25
        ("coarse", "flat"): (250 + 1 + 750 * 3, (1,)),  # 10 s: semantic, SEP, 3 levels
        ("coarse", "delay"): (250 + 1 + 750 + 2, (3, 1)),
        ("fine", "flat"): (225 * 8 + 1, (1,)),  # 3 s: 3 coarse levels, SEP, 5 fine
        ("fine", "delay"): (225 + 1 + 225 + 4, (5, 1)),
    }


def test_the_paper_size_cache_takes_what_the_module_doc_says() -> None:
    """Computed on torch's meta device (nothing allocated): 96 KiB per position and row; the
    coarse stage's 2,501 positions → 2,560, 3.75 GiB for 16 rows, shared by every row bucket."""
    with torch.device("meta"):
        model = Decoder(DecoderConfig.paper(vocab_size=3586))
    stepper = StaticStep(model, max_len=2501)
    stepper.reserve(max_rows=13)
    assert stepper.max_len == 2560 and stepper.cache.rows == 16
    assert stepper.cache.nbytes == 16 * 2560 * 96 * 2**10 == 3.75 * 2**30
    assert stepper.borrow(3, 2000).cache.keys.untyped_storage().nbytes() * 2 == (
        stepper.cache.nbytes)


@pytest.fixture(scope="module")
def piano(data_root: Path) -> np.ndarray:  # noqa: F811
    audio, rate = sf.read(data_root / "valid" / "c.flac", dtype="float32")
    assert rate == SR
    return audio


def stream_tokens(stream: TokenStream, piano: np.ndarray, n_jobs: int) -> list[torch.Tensor]:
    """Two blocks of n_jobs jobs together (prompts of other lengths, other seeds) → each job's
    semantic tokens and codes."""
    states = [stream.start(piano[: 9000 + 3100 * j], SR, 40 + j, 0.5) for j in range(n_jobs)]
    for frames in (4, 2):
        states = [s for _, s in stream.advance_many(states, [frames + j for j in range(n_jobs)],
                                                    [None] * n_jobs)]
    return [t for s in states for t in (s.semantic, s.codes)]


def test_the_server_warm_up_captures_every_bucket_the_stream_then_uses(
        model_dir: Path, tmp_path: Path, piano: np.ndarray, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """`serve.warm_up` for batches of up to 3 jobs: each stage reserved and captured for row
    buckets 1, 2 and 4 (the coarse stage of the tiny model: delay columns; the others: ids);
    streams of 3 jobs and of 1 then capture nothing, only replay, and decode no stage eagerly,
    and their tokens are the eager pipeline's. On a CPU by default nothing is captured."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    preset = write_preset(tmp_path, model_dir)
    eager, static = TokenStream(Continuation(preset)), TokenStream(Continuation(preset))
    counters = {}
    for name, (_, model) in static.pipeline.stages.items():
        counters[name] = CountingGraphs()
        use_static_step(model, StaticStep(model, graphs=counters[name]))
    caplog.set_level(logging.DEBUG, logger="continuo.server.model.static_step")
    warm_up(eager, max_batch=3)
    assert all(static_step_for(m) is None for _, m in eager.pipeline.stages.values())
    warm_up(static, max_batch=3)
    assert {name: c.captured for name, c in counters.items()} == {
        "semantic": 3, "coarse": 3, "fine": 3}
    replayed = {name: c.replayed for name, c in counters.items()}  # the warm-up's generation
    for n_jobs in (3, 1):
        got, expected = stream_tokens(static, piano, n_jobs), stream_tokens(eager, piano, n_jobs)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), n_jobs
    assert {name: c.captured for name, c in counters.items()} == {
        "semantic": 3, "coarse": 3, "fine": 3}
    assert all(c.replayed > replayed[name] for name, c in counters.items())
    assert "runs eagerly" not in caplog.text and "busy" not in caplog.text
    coarse = static_step_for(static.pipeline.stages["coarse"][1])
    assert coarse.cache.rows == 4 and coarse.cache.bucket(4).keys.shape[1] == 4


def test_a_server_in_graph_mode_warms_up_and_serves(model_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`continuo serve` with CONTINUO_STATIC_STEP=graph (the stand-in on a CPU) and
    --max-batch 2: the start-up log names each stage's captures; the engine's worker replays
    them for two jobs at once, none decoded eagerly."""
    monkeypatch.setenv(ENV_VAR, "graph")
    server = start_server(model_dir, tmp_path / "serve", "--ahead-s", "100000",
                          "--max-batch", "2")
    try:
        with server.client() as client:
            jobs = [client.generate(clip="prompt.wav", tempo=120, bars=1, chunk_beats=1,
                                    seed=s, track=f"t{s}")["job"] for s in (1, 2)]
            done = [collect(client, job)[1] for job in jobs]
    finally:
        server.stop()
    assert [d["reason"] for d in done] == ["finished"] * 2 and done[0]["mean_batch"] > 1
    log = server.log_text()
    for stage, shape in [("semantic", "(1,)"), ("coarse", "(3, 1)"), ("fine", "(1,)")]:
        assert (f"static step (graph) of the {stage} stage: 2 graphs for up to 2 rows of "
                f"{shape}, 256 positions") in log, log
    assert "runs eagerly" not in log


@cuda
@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_on_cuda_graphs_replay_the_eager_step(precision: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The default on CUDA: torch.cuda.CUDAGraph per bucket, sharing one pool. Buckets captured
    by a warm-up and at a decode's first step, decodes in them interleaved, one in another
    thread: the eager step's logits every time."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    for make, lengths, shape in [(flat, ([5, 9, 2], [3, 30], [7, 7, 1, 2, 4]), (1,)),
                                 (columns, ([3, 7, 4], [6], [2, 5]), (N_ROWS, 1))]:
        model = make(precision).cuda()
        stepper = static_step_for(model)
        assert stepper is not None and stepper.mode == "graph"
        assert isinstance(stepper.graphs, CudaGraphs)
        stepper.reserve(max_rows=8)  # the cache never grows here (that drops every graph)
        assert stepper.warm_up(2, token_shape=shape) == 2  # 1 and 2 rows
        tol = 1e-4 if precision == "float32" else 1e-3
        for rows in (*lengths, lengths[0]):
            assert_steps_agree(model, rows, 10, tol, stepper)
        errors = []

        def other_thread(model=model, stepper=stepper, lengths=lengths, tol=tol,
                         errors=errors) -> None:
            try:
                assert_steps_agree(model, lengths[1], 6, tol, stepper)
            except Exception as err:  # reported below
                errors.append(err)
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert not errors, errors
        buckets = {1, 2} | {bucket_rows(len(rows)) for rows in lengths}
        assert stepper.captures == len(buckets)
