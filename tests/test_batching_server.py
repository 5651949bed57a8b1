"""Jobs batched across clients by a real server (tiny model): several tracks with their own
tempi, chunk lengths, seeds and sampling step together through the stages, join and leave the
batch at chunk boundaries, and each gets exactly the audio it gets alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from server_fixtures import ServerProcess, collect, joined, start_server

from continuo.bridge.client import ServerError
from continuo.server.transport.protocol import ErrorCode

JOBS = {  # track: generate fields (different tempo, length, chunking, seed, sampling)
    "a": {"tempo": 120, "bars": 2, "chunk_beats": 1, "seed": 5},
    "b": {"tempo": 97, "bars": 3, "chunk_beats": 0.5, "seed": 6, "params": {"temperature": 1.4}},
    "c": {"tempo": 133, "bars": 1, "meter": "3/4", "chunk_beats": 1.5, "seed": 7},
}
PROMPT_S = {"b": 0.3}  # b continues a shorter PCM prompt: rows of different lengths


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    proc = start_server(model_dir, tmp_path_factory.mktemp("serve"), "--ahead-s", "100000",
                        "--max-jobs", "8")
    yield proc
    proc.stop()


def generate(server: ServerProcess, client, track: str) -> str:
    if track in PROMPT_S:
        pcm, rate = sf.read(server.root / "prompt.wav", dtype="float32")
        return client.generate(pcm=pcm[: round(PROMPT_S[track] * rate)], sr=rate, track=track,
                               **JOBS[track])["job"]
    return client.generate(clip="prompt.wav", track=track, **JOBS[track])["job"]


def run_job(server: ServerProcess, track: str, results: dict, started: threading.Event | None
            = None, after: threading.Event | None = None) -> None:
    """One client, one job; `after`: wait for it before starting (a job that joins later);
    `started`: set once the first chunk arrived."""
    if after is not None:
        assert after.wait(60)
    with server.client() as client:
        job = generate(server, client, track)
        chunks = []
        for event in client.stream(job, timeout_s=60):
            if event.kind == "chunk":
                chunks.append(event)
                if started is not None:
                    started.set()
            elif event.kind == "done":
                results[track] = (joined(chunks), event.header)


def test_batched_jobs_get_the_audio_they_get_alone(server: ServerProcess) -> None:
    alone = {}
    for track in JOBS:
        with server.client() as client:
            chunks, done = collect(client, generate(server, client, track))
            alone[track] = (joined(chunks), done)
            assert done["mean_batch"] == 1.0  # nothing to share the batch with
    together: dict = {}
    a_started = threading.Event()
    threads = [threading.Thread(target=run_job, args=(server, "a", together, a_started)),
               threading.Thread(target=run_job, args=(server, "b", together)),
               # c joins once a is under way: at a chunk boundary
               threading.Thread(target=run_job, args=(server, "c", together, None, a_started))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(together) == set(JOBS)
    for track in JOBS:
        pcm, done = together[track]
        assert done["reason"] == "finished"
        assert len(pcm) == len(alone[track][0]) > 0
        assert np.array_equal(pcm, alone[track][0]), track
    # they were generated together (more than one job per round on average), not in turn
    assert max(together[t][1]["mean_batch"] for t in JOBS) > 1.5
    # and they are different music (equal audio is not trivially equal)
    assert not np.array_equal(alone["a"][0][:4000], alone["b"][0][:4000])


def test_a_job_over_the_limit_is_refused_before_its_clip_is_read(model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """With --max-jobs 1 and a loop job running, a second job naming a clip that does not exist
    gets `limit`, not `bad_clip`: the server refuses before reading (a flood of refused starts
    costs no disk reads or decoding). The same request with a free slot gets `bad_clip`."""
    one = start_server(model_dir, tmp_path / "s", "--max-jobs", "1")
    try:
        with one.client() as first, one.client() as second:
            job = first.generate(clip="prompt.wav", tempo=120, chunk_beats=1, loop=True)["job"]
            with pytest.raises(ServerError) as refused:
                second.generate(clip="missing.wav", tempo=120, bars=1)
            assert refused.value.code == ErrorCode.LIMIT
            first.stop(job=job)
            with pytest.raises(ServerError) as bad:
                second.generate(clip="missing.wav", tempo=120, bars=1)
            assert bad.value.code == ErrorCode.BAD_CLIP
    finally:
        one.stop()
