"""`continuo serve` as a real process on loopback, driven by the real client: exact chunks,
recordings, preemption, stop, live parameters, loop mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from server_fixtures import SR, ServerProcess, collect, joined, server, start_server  # noqa: F401

from continuo.server.musical_time import Meter, bar_to_sample, beats_to_samples

pytestmark = pytest.mark.timeout(300)


def test_hello_names_the_model_and_its_limits(server: ServerProcess) -> None:  # noqa: F811
    with server.client() as client:
        hello = client.hello()
        assert hello["protocol"] == 1 and hello["sample_rate"] == SR
        assert hello["limits"]["max_prompt_s"] == 3 and hello["limits"]["max_jobs"] == 4
        presets = client.presets()
        assert {"piano", "realtime"} <= {p["name"] for p in presets["presets"]}
        assert presets["default"] == "tiny"


def test_chunks_tile_the_stream_and_equal_the_recording(server: ServerProcess) -> None:  # noqa: F811
    with server.client() as client:
        accepted = client.generate(clip="prompt.wav", tempo=120, bars=2, meter="3/4",
                                   chunk_beats=0.5, seed=3)
        chunks, done = collect(client, accepted["job"])
    total = bar_to_sample(2, 120, Meter(3, 4), SR)
    assert accepted["total_samples"] == total == 72_000
    assert [c.header["index"] for c in chunks] == list(range(12))
    offset = 0
    for c in chunks:
        h = c.header
        assert h["start_sample"] == offset and len(c.pcm) == h["n_samples"] == 6000
        assert (h["bar"], h["beat"]) == divmod(h["index"] * 0.5, 3)
        offset += h["n_samples"]
    assert offset == total and chunks[-1].header["last"] and not chunks[0].header["last"]
    lead_in = np.frombuffer(chunks[0].header["lead_in"], "<f4")
    assert len(lead_in) == 1200  # the codec's rendering of the prompt's last 50 ms
    assert done["reason"] == "finished" and done["samples"] == total and done["chunks"] == 12
    recorded, sr = sf.read(done["recording"], dtype="float32")
    assert sr == SR
    np.testing.assert_array_equal(recorded, joined(chunks))
    sidecar = json.loads(Path(done["sidecar"]).read_text())
    assert sidecar["reason"] == "finished" and sidecar["samples"] == total
    assert sidecar["seed"] == 3 and sidecar["meter"] == "3/4" and sidecar["tempo"] == 120
    assert set(sidecar["model_sha256"]) == {"codec", "semantic", "semantic_lm", "coarse_lm",
                                            "fine_lm"}
    assert sidecar["prompt"]["source"].endswith("prompt.wav") and len(
        sidecar["prompt"]["sha256"]) == 64


def test_hundred_bars_at_93_7_bpm_in_7_8_land_on_exact_samples(
    server: ServerProcess,  # noqa: F811
) -> None:
    meter = Meter(7, 8)
    with server.client() as client:
        accepted = client.generate(clip="prompt.wav", tempo=93.7, bars=100, meter="7/8",
                                   chunk_beats=3.5)  # a bar per chunk
        chunks, done = collect(client, accepted["job"], timeout_s=120)
    assert len(chunks) == 100 and done["reason"] == "finished"
    for i, c in enumerate(chunks):
        assert (c.header["bar"], c.header["beat"]) == (i, 0.0)
        assert c.header["start_sample"] == bar_to_sample(i, 93.7, meter, SR)
        assert c.header["n_samples"] == bar_to_sample(i + 1, 93.7, meter, SR) - bar_to_sample(
            i, 93.7, meter, SR) == len(c.pcm)
    assert done["samples"] == bar_to_sample(100, 93.7, meter, SR)


def test_a_new_generate_on_a_track_preempts_its_job(server: ServerProcess) -> None:  # noqa: F811
    with server.client() as client:
        first = client.generate(clip="prompt.wav", tempo=120, bars=500, chunk_beats=1,
                                track="keys")
        got = [client.recv(30) for _ in range(3)]
        assert [e.kind for e in got if e.kind != "heartbeat"][:1] == ["chunk"]
        second = client.generate(clip="prompt.wav", tempo=100, bars=1, chunk_beats=1,
                                 track="keys")
        old_chunks, old_done = collect(client, first["job"])
        new_chunks, new_done = collect(client, second["job"])
    assert old_done["reason"] == "preempted" and 1 <= old_done["chunks"] < 2000
    assert old_done["samples"] == sum(c.header["n_samples"] for c in old_chunks) + sum(
        len(e.pcm) for e in got if e.kind == "chunk")
    assert new_done["reason"] == "finished" and len(new_chunks) == 4
    assert sf.info(old_done["recording"]).frames == old_done["samples"]


def test_stop_ends_a_job_at_once_and_its_recording_holds_what_was_sent(
    server: ServerProcess,  # noqa: F811
) -> None:
    with server.client() as client:
        job = client.generate(clip="prompt.wav", tempo=120, bars=1000, chunk_beats=1)["job"]
        first = next(client.stream(job))
        done = client.stop(job=job)
        rest, final = collect(client, job)
        assert client.status()["jobs"] == []
    chunks = [first, *rest]
    assert [d["job"] for d in done] == [job] and done[0]["reason"] == "stopped"
    assert final == done[0] and final["chunks"] == len(chunks)
    recorded, _ = sf.read(final["recording"], dtype="float32")
    np.testing.assert_array_equal(recorded, joined(chunks))


@pytest.mark.parametrize("chunk_beats", [1, 0.25])
def test_param_applies_from_the_chunk_it_names(server: ServerProcess,  # noqa: F811
                                               chunk_beats: float) -> None:
    """Same seed twice; the second run turns the temperature down after its first chunk. The
    chunks before `from_chunk` are identical, the ones from it on carry the new params and
    differ. With 1/4-beat chunks a block of tokens (0.24 s at least) outlasts a chunk, so audio
    made before the change may fill the next chunk too: `from_chunk` says so."""
    args = {"clip": "prompt.wav", "tempo": 120, "bars": 6, "chunk_beats": chunk_beats,
            "seed": 11, "params": {"temperature": 1.0}}
    with server.client() as client:
        reference, _ = collect(client, client.generate(**args)["job"])
        job = client.generate(**args)["job"]
        stream = client.stream(job)
        head = [next(stream)]
        accepted = client.param(job=job, params={"temperature": 0.05, "top_k": 3})
        tail = list(stream)
    chunks, k = head + tail[:-1], accepted["from_chunk"]
    assert 1 <= k < len(chunks) == len(reference) == 24 / chunk_beats
    assert accepted["params"] == {"temperature": 0.05, "top_k": 3.0}
    for i, (ours, ref) in enumerate(zip(chunks, reference, strict=True)):
        if i < k:
            np.testing.assert_array_equal(ours.pcm, ref.pcm)
            assert ours.header["params"] == {"temperature": 1.0}
        else:
            assert ours.header["params"] == {"temperature": 0.05, "top_k": 3.0}
    assert not np.array_equal(chunks[k].pcm, reference[k].pcm)  # new audio in it, at least
    log = json.loads(Path(tail[-1].header["sidecar"]).read_text())["params_log"]
    assert [(e["from_chunk"], e["params"]) for e in log] == [
        (0, {"temperature": 1.0}), (k, {"temperature": 0.05, "top_k": 3.0})]


def test_loop_mode_runs_past_its_prompt_until_stopped(server: ServerProcess) -> None:  # noqa: F811
    with server.client() as client:
        job = client.generate(clip="prompt.wav", tempo=120, chunk_beats=2, loop=True)["job"]
        stream = client.stream(job)
        chunks = [next(stream) for _ in range(12)]  # 12 s, the tiny model's context is 0.5 s
        client.stop(job=job)
        rest, done = collect(client, job)
    chunks += rest
    assert done["reason"] == "stopped" and done["chunks"] == len(chunks) >= 12
    audio = joined(chunks)
    assert len(audio) == beats_to_samples(2 * len(chunks), 120, SR)
    assert np.abs(audio[-SR:]).max() > 0  # still making sound at the end
    assert not any(c.header["last"] for c in chunks)
    sidecar = json.loads(Path(done["sidecar"]).read_text())
    assert sidecar["loop"] is True and sidecar["bars"] is None


def test_a_client_reconnecting_with_its_identity_gets_its_jobs_back(
    server: ServerProcess,  # noqa: F811
) -> None:
    """A bridge that lost its connection (and made a new socket) keeps its loop job: the
    chunks come to the new connection, which can stop it."""
    identity = b"bridge-test-reconnect"
    first = server.client(identity=identity)
    job = first.generate(clip="prompt.wav", tempo=120, chunk_beats=1, loop=True)["job"]
    before = [next(first.stream(job)) for _ in range(2)]
    first.close()
    with server.client(identity=identity) as second:
        second.hello()
        stream = second.stream(job)
        after = [next(stream) for _ in range(3)]
        assert [c.header["index"] for c in after] == sorted(c.header["index"] for c in after)
        assert after[0].header["index"] > before[-1].header["index"]
        done = second.stop(job=job)
    assert [d["job"] for d in done] == [job] and done[0]["reason"] == "stopped"


def test_long_chunks_start_early_enough_to_be_on_time(model_dir: Path,
                                                       tmp_path: Path) -> None:
    """4-beat chunks at 60 BPM (4 s each) with --ahead-s 0.05: a chunk takes longer to make
    than the server may run ahead, so it must start that much earlier, or every one is late."""
    slow = start_server(model_dir, tmp_path / "s", "--ahead-s", "0.05")
    try:
        with slow.client() as client:
            job = client.generate(clip="prompt.wav", tempo=60, bars=3, chunk_beats=4)["job"]
            chunks, done = collect(client, job)
    finally:
        slow.stop()
    assert len(chunks) == 3 and done["reason"] == "finished"
    assert done["misses"] == 0, done
