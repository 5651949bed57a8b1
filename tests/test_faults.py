"""Faults injected for real, and survived (issue 8, docs/reliability.md "Faults").

- The recordings' disk read-only, then full (a real tmpfs, mounted read-only, then filled; root
  ignores file modes, not a read-only mount): jobs play on without a recording and say so (an
  `error` of code `recording` naming the WAV and the OS error; `recording_error` in `accepted`
  and `done`); a WAV cut by a full disk holds the whole chunks before the cut.
- A corrupted checkpoint: a training state replaced by a malicious pickle, a weights file
  replaced by one (with its hash updated to match), a truncated weights file: refused with a
  CheckpointError naming the file, and the pickle's payload never runs; `continuo serve` with a
  corrupted model folder exits 2 naming the file, before it binds its port.
(The server killed under a bridge, and the bridge's JACK server gone: test_faults_bridge.py.)

Each test prints its figures as a `FAULT {json}` line (run with -s to see them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from continuation_fixtures import data_root, model_dir_fixture, write_preset  # noqa: F401
from server_fixtures import SR, collect, joined, start_server

from continuo.bridge.client import Client
from continuo.server.continuation import Continuation
from continuo.server.errors import CheckpointError
from continuo.server.presets import load_preset
from continuo.server.training.checkpoint import (
    CONFIG_NAME,
    TRAINING_NAME,
    WEIGHTS_NAME,
    file_sha256,
    load_model_folder,
    load_training_checkpoint,
    save_training_checkpoint,
)

pytestmark = pytest.mark.timeout(300)
CHUNK_SAMPLES = SR // 2  # one beat at 120 BPM


def _report(fault: str, **figures: object) -> None:
    print("FAULT", json.dumps({"fault": fault, **figures}), flush=True)


# --- the recordings' disk read-only, then full --------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own (root ignores file modes: only a read-only mount stops it)."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def _recording_errors(client: Client) -> list[str]:
    messages = []
    while (event := client.recv(0.5)) is not None:
        if event.kind == "error":
            assert event.header["code"] == "recording" and event.job is None, event.header
            messages.append(event.header["message"])
    return messages


def test_a_read_only_then_full_disk_cuts_recordings_not_the_music(
    model_dir: Path, tmp_path: Path, disk: Path,
) -> None:
    server = start_server(model_dir, tmp_path / "serve", "--ahead-s", "100000", "--out",
                          str(disk))
    job = {"clip": "prompt.wav", "tempo": 120, "chunk_beats": 1}
    try:
        with server.client() as a, server.client() as b:
            baseline = a.generate(bars=1, **job)
            collect(a, baseline["job"])
            sidecar_bytes = Path(baseline["recording"]).with_suffix(".json").stat().st_size
            _remount(disk, "ro")
            started = [(c, c.generate(bars=2, **job)) for c in (a, b)]  # two clients at once
            for client, accepted in started:
                assert accepted["recording"] is None
                assert str(disk) in accepted["recording_error"]
                assert "Read-only file system" in accepted["recording_error"]
                chunks, done = collect(client, accepted["job"])
                assert len(chunks) == 8 and done["reason"] == "finished"
                assert done["recording"] is None and done["recording_error"]
                errors = _recording_errors(client)
                assert len(errors) == 1 and accepted["job"] in errors[0], errors
                assert "Read-only file system" in errors[0] and "plays on" in errors[0]
            _remount(disk, "rw")
            stat = os.statvfs(disk)
            room = 2 * sidecar_bytes + 44 + int(2.5 * 4 * CHUNK_SAMPLES)  # cut in chunk 3
            (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - room))
            accepted = a.generate(bars=4, **job)
            chunks, done = collect(a, accepted["job"])
            errors = _recording_errors(a)
            server.process.poll()
            assert server.process.returncode is None, server.log_text()
    finally:
        server.stop()
    wav = Path(accepted["recording"])
    assert len(chunks) == 16 and done["reason"] == "finished"  # the music went on
    assert len(errors) == 1 and accepted["job"] in errors[0], errors
    assert str(wav) in errors[0] and "No space left on device" in errors[0]
    assert done["recording_error"] in errors[0] and done["recording"] == str(wav)
    meta = json.loads(wav.with_suffix(".json").read_text())
    cut = meta["recording_cut"]
    assert meta["reason"] == "finished" and cut["error"] == done["recording_error"]
    assert 1 <= cut["chunks"] < 16
    recorded = sf.read(wav, dtype="float32")[0]  # the whole chunks before the cut, no more
    np.testing.assert_array_equal(recorded, joined(chunks[:cut["chunks"]]))
    _report("disk read-only, then full", read_only_jobs=2, read_only_chunks_played=16,
            full_disk_chunks_played=len(chunks), chunks_recorded_before_full=cut["chunks"])


# --- corrupted checkpoints ----------------------------------------------------------------------


class _Payload:
    """Pickles to a call of open(marker, "w"): unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return open, (self.marker, "w")


def test_a_malicious_or_corrupt_checkpoint_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_training_checkpoint(folder, {"w": torch.zeros(3)}, "toy", {}, {"adam": {}}, {"step": 7})
    assert load_training_checkpoint(folder, "toy").state["step"] == 7
    marker = tmp_path / "pwned"
    training = folder / TRAINING_NAME
    torch.save({"optimizers": _Payload(marker), "torch_rng": torch.get_rng_state()}, training)
    with pytest.raises(CheckpointError, match=str(training)):
        load_training_checkpoint(folder, "toy")
    assert not marker.exists(), "the training state was unpickled"

    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    weights.write_bytes(training.read_bytes())  # the pickle as the weights, its hash updated
    meta = json.loads(config.read_text())
    config.write_text(json.dumps({**meta, "weights_sha256": file_sha256(weights)}))
    with pytest.raises(CheckpointError, match=f"{weights}: unreadable safetensors"):
        load_model_folder(folder, "toy")
    assert not marker.exists(), "the weights file was unpickled"

    torch.load(training, weights_only=False)  # the control: unpickled, it does run
    assert marker.exists()


def _corrupt_copy(model_dir: Path, folder: Path) -> Path:
    """A copy of the model folder; → its semantic stage's weights file, truncated to half."""
    shutil.copytree(model_dir, folder)
    weights = folder / "semantic_lm" / "best" / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return weights


def test_every_weights_file_of_a_model_folder_is_checked_when_it_loads(
    model_dir: Path, tmp_path: Path,
) -> None:
    files = sorted(f for f in model_dir.rglob("*.safetensors") if "checkpoint" not in f.parts)
    assert {f.relative_to(model_dir).parts[0] for f in files} >= {
        "codec", "semantic", "semantic_lm", "coarse_lm", "fine_lm"}
    for index, original in enumerate(files):
        folder = tmp_path / f"m{index}"
        shutil.copytree(model_dir, folder)
        weights = folder / original.relative_to(model_dir)
        weights.write_bytes(b"garbage" + weights.read_bytes()[7:])  # same length, bad content
        preset = load_preset(str(write_preset(folder, folder)))
        with pytest.raises(CheckpointError, match=str(weights)):
            Continuation(preset)
    _report("corrupt weights", files_checked=len(files))


def test_serve_refuses_a_corrupt_model_folder_before_it_binds(
    model_dir: Path, tmp_path: Path,
) -> None:
    weights = _corrupt_copy(model_dir, tmp_path / "model")
    preset = write_preset(tmp_path, tmp_path / "model")
    with socket.socket() as taken:  # serve binding first would fail on this, not on the model
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "continuo.server.cli", "serve", "--preset", str(preset),
             "--bind", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"continuo: error: {weights}" in result.stderr
    assert "serving on" not in result.stderr and "Address already in use" not in result.stderr
