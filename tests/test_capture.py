"""Live-loop capture: `read_tail` on WAVs finished, still open for writing and with stale or
zero headers gives exactly the last samples on disk; `InputCapture` on JACK (dummy driver)
records a tone another JACK client plays into it, sample for sample, its onset where the
player's JACK cycle puts it."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from capture_probe import RATE, tone
from jack_fixtures import jack_env

from continuo.bridge.capture import CaptureError, read_tail

PROBE = Path(__file__).with_name("capture_probe.py")


def signal(n: int, rate: int = 44_100, channels: int = 1) -> np.ndarray:
    """[n, channels] a sweep with a ramp in it, no two neighbouring windows alike."""
    t = np.arange(n) / rate
    mono = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.2 * (t % 0.37)
    return np.stack([mono * (1 - 0.3 * c) for c in range(channels)], axis=1)


def stored(x: np.ndarray, subtype: str) -> np.ndarray:
    """x [T, C] as a WAV of `subtype` holds it, read back whole and downmixed like read_tail."""
    buffer = io.BytesIO()
    sf.write(buffer, x, 44_100, subtype, format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="float32", always_2d=True)[0].mean(axis=1, dtype=np.float32)


def test_finished_wav_gives_its_last_seconds(tmp_path: Path) -> None:
    x = signal(3 * 44_100, channels=2)
    path = tmp_path / "take.wav"
    with sf.SoundFile(path, "w", 44_100, 2, "PCM_16") as f:
        f.write(x)
        f.title = "a LIST chunk after the data, not audio"
    assert path.read_bytes().rindex(b"LIST") > path.read_bytes().index(b"data")
    pcm, rate = read_tail(path, 1.5)
    assert rate == 44_100 and pcm.dtype == np.float32
    np.testing.assert_array_equal(pcm, stored(x, "PCM_16")[-66_150:])


def test_wav_still_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "recording.wav"
    x = signal(2 * 44_100)
    f = sf.SoundFile(path, "w", 44_100, 1, "FLOAT")
    try:
        f.write(x[:44_100])
        f.flush()
        f.write(x[44_100:])  # on disk, the header not rewritten
        f.flush()
        pcm, _ = read_tail(path, 1.25)
        np.testing.assert_array_equal(pcm, x[-55_125:, 0].astype(np.float32))
    finally:
        f.close()


@pytest.mark.parametrize("header_frames", [0, 44_100])
def test_wav_whose_header_counts_fewer_frames(tmp_path: Path, header_frames: int) -> None:
    """A DAW's recording: RIFF and data sizes still 0 (or from a second ago), 3 s on disk."""
    path = tmp_path / "recording.wav"
    x = signal(3 * 44_100, channels=2)
    sf.write(path, x, 44_100, "PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data_bytes = header_frames * 4
    data[at: at + 4] = struct.pack("<I", data_bytes)
    data[4:8] = struct.pack("<I", at + 4 - 8 + data_bytes if header_frames else 0)
    path.write_bytes(bytes(data))
    assert sf.info(path).frames == header_frames  # what the header alone would give
    pcm, rate = read_tail(path, 2.0)
    assert rate == 44_100
    np.testing.assert_array_equal(pcm, stored(x, "PCM_16")[-88_200:])


def test_read_tail_errors_name_the_file_and_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing.wav"
    with pytest.raises(CaptureError, match=r"missing\.wav: no such file"):
        read_tail(missing, 1)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match=r"empty\.wav: the file is empty"):
        read_tail(empty, 1)
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20)
    with pytest.raises(CaptureError, match=r"notes\.wav: not an audio file"):
        read_tail(text, 1)
    short = tmp_path / "short.flac"
    sf.write(short, signal(22_050)[:, 0], 44_100)
    with pytest.raises(CaptureError, match=r"short\.flac: holds 0\.500 s of audio \(22050 "
                                           r"frames\), 2\.000 s were asked for"):
        read_tail(short, 2)
    with pytest.raises(CaptureError, match="must be positive"):
        read_tail(short, 0)


def test_short_recording_in_progress_says_how_long_it_is(tmp_path: Path) -> None:
    path = tmp_path / "recording.wav"
    sf.write(path, signal(44_100), 44_100, "PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = data[data.index(b"data") + 4: data.index(b"data") + 8] = b"\0\0\0\0"
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match=r"recording\.wav: holds 1\.000 s of audio"):
        read_tail(path, 4)


@pytest.mark.timeout(120)
def test_input_capture_on_jack_records_a_tone_on_time(jack_server: str) -> None:
    result = subprocess.run([sys.executable, str(PROBE)], env=jack_env(jack_server),
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    span = np.array(report["span"], np.float32)
    start_s, end_s = report["start_s"], report["end_s"]
    assert abs(len(span) - (end_s - start_s) * RATE) <= 1
    # Where the tone must start: the player's JACK cycle for its onset, less the capture
    # port's latency (the input buffer of a cycle holds what the converter took one period
    # earlier; JACK hands the player's output to our input within the same cycle).
    expected_s = report["onset_cycle_s"] - report["capture_latency_frames"] / RATE
    expected = round((expected_s - start_s) * RATE)
    period = 256
    onset = _onset(span, expected, period)
    assert onset is not None, "the tone is not in the captured span within a period of its time"
    # Measured: 0 or 1 sample, also with the CPUs saturated; a latency or block mistake is a
    # period or more.
    assert abs(onset - expected) <= RATE // 1000, f"the onset is {onset - expected} samples off"
    player = tone(0, len(span) - onset, 0)
    np.testing.assert_array_equal(span[:onset], 0)
    np.testing.assert_allclose(span[onset:], player, atol=1e-6)
    assert "not in the buffer yet" in report["future_error"]
    assert "no longer in the buffer" in report["past_error"]
    assert report["device_error"].startswith(
        "CaptureError: cannot open audio input 'no such input' at 44100 Hz")


def _onset(span: np.ndarray, expected: int, slack: int) -> int | None:
    """The first offset within ±slack of `expected` where span [T] holds the tone exactly."""
    for k in range(max(0, expected - slack), min(len(span), expected + slack + 1)):
        n = min(len(span) - k, RATE // 10)
        if np.allclose(span[k: k + n], tone(0, n, 0), atol=1e-6):
            return k
    return None
