"""Audio I/O on real files: round trips, resampling, downmix, bad input, peak-safe atomic write."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import tone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continuo.server.audio import (
    Audio,
    check_samples,
    downmix,
    load_audio,
    resample,
    write_audio,
)
from continuo.server.errors import AudioError, ConfigError

SR = 24000


def stereo(seconds: float = 0.5, sample_rate: int = SR) -> np.ndarray:
    """[2, T]: 440 Hz left, 660 Hz right."""
    return np.stack([tone(440, seconds, sample_rate), tone(660, seconds, sample_rate, amp=0.2)])


def peak_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


def wav_header(n_frames: int, sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header announcing `n_frames` frames (the data may be missing)."""
    data = n_frames * channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, channels,
        sample_rate, sample_rate * channels * 2, channels * 2, 16, b"data", data,
    )


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype", "max_error"),
    [(".wav", None, 2 / 32768), (".wav", "FLOAT", 0.0), (".flac", "PCM_24", 2 / 2**23)],
)
def test_lossless_round_trip(tmp_path: Path, suffix: str, subtype: str, max_error: float) -> None:
    x = stereo()
    path = tmp_path / f"clip{suffix}"
    assert write_audio(path, x, SR, subtype=subtype) == 1.0
    audio = load_audio(path, mono=False)
    assert audio.samples.dtype == np.float32
    assert audio.samples.shape == x.shape
    assert (audio.sample_rate, audio.source_sample_rate, audio.source_channels) == (SR, SR, 2)
    assert audio.path == path
    assert audio.seconds == pytest.approx(0.5)
    assert np.abs(audio.samples - x).max() <= max_error


def test_ogg_round_trip_keeps_pitch_and_length(tmp_path: Path) -> None:
    x = stereo()
    path = tmp_path / "clip.ogg"
    write_audio(path, x, SR)  # VORBIS by default
    audio = load_audio(path, mono=False)
    assert audio.samples.shape == x.shape
    for channel, hz in enumerate((440, 660)):
        assert peak_hz(audio.samples[channel], SR) == pytest.approx(hz, abs=2)
    error = np.sqrt(np.mean((audio.samples - x) ** 2) / np.mean(x**2))
    assert error < 0.1


def test_resample_44k1_to_24k_keeps_frequency(tmp_path: Path) -> None:
    x = tone(997, 1.0, 44100)[None]
    y = resample(x, 44100, 24000)
    assert y.shape == (1, 24000) and y.dtype == np.float32
    assert peak_hz(y[0], 24000) == pytest.approx(997, abs=1)
    # Through a file, too.
    path = tmp_path / "tone.wav"
    write_audio(path, x, 44100)
    audio = load_audio(path, sample_rate=24000)
    assert (audio.sample_rate, audio.source_sample_rate) == (24000, 44100)
    assert audio.samples.shape == (1, 24000)
    assert peak_hz(audio.samples[0], 24000) == pytest.approx(997, abs=1)


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    x = tone(15000, 0.5, 44100)[None]  # above 12 kHz, the Nyquist frequency of 24 kHz
    y = resample(x, 44100, 24000)
    assert np.sqrt(np.mean(y**2)) < 1e-3 * np.sqrt(np.mean(x**2))


def test_stereo_downmix(tmp_path: Path) -> None:
    x = stereo()
    path = tmp_path / "stereo.flac"
    write_audio(path, x, SR, subtype="PCM_24")
    audio = load_audio(path)
    assert audio.samples.shape == (1, x.shape[1]) and audio.source_channels == 2
    np.testing.assert_allclose(audio.samples[0], (x[0] + x[1]) / 2, atol=1e-6)
    np.testing.assert_array_equal(downmix(x), x.mean(axis=0, keepdims=True))
    assert downmix(x[:1]).shape == (1, x.shape[1])


# --- bad input ----------------------------------------------------------------------------------


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _sf(x: np.ndarray, subtype: str = "FLOAT", fmt: str | None = None) -> Callable[[Path], None]:
    return lambda p: sf.write(p, x, SR, subtype=subtype, format=fmt)


def _corrupt_flac(p: Path) -> None:
    sf.write(p, tone(440, 1.0), SR, format="FLAC")
    data = bytearray(p.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    p.write_bytes(bytes(data))


NAN = tone(440, 0.1)
NAN[100] = np.nan
INF = tone(440, 0.1)
INF[5] = np.inf

BAD_FILES: dict[str, tuple[str, Callable[[Path], None] | None, str]] = {
    "missing": ("gone.wav", None, "not found"),
    "empty": ("empty.wav", _write(b""), "empty"),
    "random bytes": ("noise.wav", _write(np.random.default_rng(1).bytes(4096)), "not a readable"),
    "text": ("notes.txt", _write(b"C E G"), "unsupported format '.txt'"),
    "no extension": ("take", _sf(tone(440, 0.1), fmt="WAV"), "unsupported format"),
    "real mp3": ("take.mp3", _sf(tone(440, 0.1), "MPEG_LAYER_III", "MP3"), "unsupported"),
    "mp3 named .wav": ("take.wav", _sf(tone(440, 0.1), "MPEG_LAYER_III", "MP3"), "MPEG"),
    "corrupt flac": ("broken.flac", _corrupt_flac, "corrupt"),
    "zero channels": ("nochan.wav", _write(wav_header(100, SR, 0) + bytes(200)), ""),
    "zero samples": ("nothing.wav", _sf(np.zeros(0, np.float32), "PCM_16"), "no samples"),
    "header only": ("header.wav", _write(wav_header(0, SR)), "no samples"),
    "silent": ("quiet.wav", _sf(np.zeros(2400, np.float32), "PCM_16"), "silent"),
    "nan": ("nan.wav", _sf(NAN), "NaN/inf"),
    "inf": ("inf.wav", _sf(INF), "NaN/inf"),
    "too long": ("long.wav", _sf(tone(440, 2.0)), "longer than the limit"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_audio_error_naming_it(tmp_path: Path, case: str) -> None:
    name, make, problem = BAD_FILES[case]
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(AudioError) as caught:
        load_audio(path, max_seconds=1.0)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert problem in message


def test_directory_and_opposite_phase_stereo(tmp_path: Path) -> None:
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    with pytest.raises(AudioError, match="not a regular file"):
        load_audio(folder)
    x = tone(440, 0.2)
    write_audio(tmp_path / "cancel.wav", np.stack([x, -x]), SR)
    with pytest.raises(AudioError, match=r"downmixed to mono.*silent"):
        load_audio(tmp_path / "cancel.wav")
    assert load_audio(tmp_path / "cancel.wav", mono=False).samples.shape[0] == 2


def test_max_seconds_is_checked_before_reading(tmp_path: Path) -> None:
    # A sparse file whose header announces 30 minutes: refused from the header alone.
    path = tmp_path / "huge.wav"
    n_frames = 30 * 60 * 8000
    with open(path, "wb") as f:
        f.write(wav_header(n_frames, 8000))
        f.truncate(44 + 2 * n_frames)
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"1800\.0 s long.*limit of 60 s"):
            load_audio(path, max_seconds=60)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1_000_000  # reading it would take 57.6 MB of float32
    # The same hand-made header with real data in it loads.
    short = tmp_path / "short.wav"
    pcm = (tone(440, 0.5, 8000) * 32767).astype("<i2")
    short.write_bytes(wav_header(len(pcm), 8000) + pcm.tobytes())
    assert load_audio(short, max_seconds=0.5).samples.shape == (1, 4000)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "10", True])
def test_bad_max_seconds_is_a_config_error(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "ok.wav"
    write_audio(path, tone(440, 0.1)[None], SR)
    with pytest.raises(ConfigError, match="max_seconds"):
        load_audio(path, max_seconds=bad)  # type: ignore[arg-type]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_other_exception_escapes_for_damaged_files(tmp_path: Path, data: st.DataObject) -> None:
    suffix = data.draw(st.sampled_from([".wav", ".flac", ".ogg"]))
    path = tmp_path / f"damaged{suffix}"
    write_audio(path, stereo(0.2), SR)
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    path.write_bytes(bytes(raw))
    try:
        audio = load_audio(path, max_seconds=5)
    except AudioError as e:
        assert str(path) in str(e)
    else:
        assert np.isfinite(audio.samples).all() and audio.samples.shape[1] > 0


# --- PCM from the wire --------------------------------------------------------------------------


def test_check_samples_accepts_wire_pcm() -> None:
    x = tone(440, 0.1)
    wire = np.asarray(x, "<f4").tobytes()
    out = check_samples(np.frombuffer(wire, "<f4").reshape(1, -1), "PCM from client")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out[0], x)
    assert check_samples(x[None].astype(np.float64), "f64").dtype == np.float32
    assert check_samples(np.zeros((1, 10), np.float32), "pad", silence_peak=None).shape == (1, 10)


@pytest.mark.parametrize(
    ("samples", "problem"),
    [
        (tone(440, 0.1), "shape"),
        ((tone(440, 0.1) * 32767).astype(np.int16)[None], "dtype int16"),
        (np.zeros((2400, 2), np.float32) + 0.1, "[T, C]"),
        (np.zeros((0, 100), np.float32), "no channels"),
        (np.zeros((1, 0), np.float32), "no samples"),
        (NAN[None], "NaN/inf"),
        (np.full((1, 100), 1e-5, np.float32), "silent"),
        ([[0.1, 0.2]], "numpy array"),
    ],
)
def test_check_samples_rejects(samples: np.ndarray, problem: str) -> None:
    with pytest.raises(AudioError) as caught:
        check_samples(samples, "PCM from client")
    assert str(caught.value).startswith("PCM from client: ")
    assert problem in str(caught.value)


def test_audio_validates_itself() -> None:
    audio = Audio(np.zeros((2, 48000), np.float32), 24000, 48000, 2)
    assert (audio.seconds, audio.channels, audio.n_samples) == (2.0, 2, 48000)
    with pytest.raises(AudioError, match="float32"):
        Audio(np.zeros((1, 10)), 24000, 24000, 1)
    with pytest.raises(AudioError, match="sample_rate"):
        Audio(np.zeros((1, 10), np.float32), 0, 24000, 1)
    with pytest.raises(ConfigError, match="to_rate"):
        resample(audio.samples, 24000, 0)


# --- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_write_audio_never_clips(tmp_path: Path, subtype: str) -> None:
    x = stereo() * 8  # peak 2.4
    path = tmp_path / "loud.wav"
    gain = write_audio(path, x, SR, subtype=subtype)
    assert gain == pytest.approx(1 / np.abs(x).max())
    y, _ = sf.read(path, dtype="float32", always_2d=True)
    assert np.abs(y).max() == pytest.approx(1.0, abs=1e-4) and np.abs(y).max() <= 1.0
    np.testing.assert_allclose(y.T / gain, x, atol=3e-4 / gain)  # the shape, not clipped
    assert write_audio(path, x / 8, SR) == 1.0  # peak 0.3: untouched


def test_write_audio_creates_folders_and_checks_arguments(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.flac"
    write_audio(path, tone(440, 0.1)[None], SR)
    assert sf.info(path).format == "FLAC"
    with pytest.raises(AudioError, match=r"cannot write format '\.mp3'"):
        write_audio(tmp_path / "out.mp3", tone(440, 0.1)[None], SR)
    with pytest.raises(ConfigError, match="PCM_16"):
        write_audio(tmp_path / "out.ogg", tone(440, 0.1)[None], SR, subtype="PCM_16")
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "nan.wav", NAN[None], SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_failed_write_leaves_old_file_and_no_debris(tmp_path: Path) -> None:
    path = tmp_path / "take.flac"
    write_audio(path, tone(440, 0.2)[None], SR)
    before = path.read_bytes()
    # FLAC cannot store 1 MHz: libsndfile fails after the file is opened (plain sf.write would
    # leave an empty file under the final name).
    with pytest.raises(AudioError, match="could not be written"):
        write_audio(path, tone(660, 0.2)[None], 1_000_000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["take.flac"]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from continuo.server.audio import write_audio
    x = np.full((2, 20 * 48000), 0.25, np.float32)
    write_audio(sys.argv[1], x, 48000)
    print("ready", flush=True)
    while True:
        write_audio(sys.argv[1], x, 48000)
    """
)


def test_killed_writer_never_leaves_a_half_file(tmp_path: Path) -> None:
    path = tmp_path / "take.wav"
    for delay_s in (0.02, 0.1, 0.25):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        info = sf.info(path)
        assert (info.frames, info.channels) == (20 * 48000, 2)
        assert path.stat().st_size == 44 + 20 * 48000 * 2 * 2
