"""Live-loop capture: the last bars of an audio input, or of a file a DAW is still writing.

`InputCapture` keeps the last `max_s` seconds of an input device in a ring buffer (sounddevice),
and knows when each sample reached the converter on the `time.perf_counter()` clock, the clock
the bridge's tempo clocks speak: `take(start_s, end_s)` cuts the input between two bar times.

How a frame gets its time. Per block the callback stores its first frame's index and its ADC
time mapped to perf_counter:

    adc_perf_s = perf_counter() − (time.currentTime − time.inputBufferAdcTime)

`currentTime` is read by PortAudio when the host's cycle reaches it and perf_counter() when our
Python callback runs, later by a delay that is never negative (the callback waits for the GIL; on
JACK, `currentTime` is also read later than the cycle's start) and varies block to block. So
`c = adc_perf_s − frame / rate` (the time of frame 0 as that block says) is the true value plus
a positive delay, and `take` uses the smallest c among the blocks within `WINDOW_S` of the
span's end: the least-delayed block's, which is within tens of µs of the truth on an idle
machine, and the window keeps the device's clock drift against perf_counter (a sound card's
crystal is tens of ppm off: a few ms over a minute) from adding up over a long buffer.

`read_tail(path, seconds)` is the other source: the last seconds of a WAV a DAW is recording,
whose header still says fewer frames (or none) than the file holds.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from time import perf_counter

import numpy as np
import soundfile as sf

from continuo.server.errors import ContinuoError

WINDOW_S = 2.0
MIN_BLOCK_FRAMES = 16  # the block metadata ring holds max_s of blocks this small
SWITCH_INTERVAL_S = 0.0005


class CaptureError(ContinuoError):
    """An input that cannot be captured: a device that will not open, a span not in the
    buffer, a file that is missing, empty, not audio or too short."""


class InputCapture:
    """The last `max_s` seconds of an input device, addressable by perf_counter time.

    The callback only copies into preallocated arrays and then publishes two counters (frames,
    blocks); `take` checks after copying that the callback did not overwrite what it copied."""

    def __init__(self, device: int | str | None = None, samplerate: int = 48_000,
                 channels: int = 1, max_s: float = 60.0) -> None:
        import sounddevice as sd

        if not (max_s > 0 and channels >= 1 and samplerate > 0):
            raise CaptureError(f"capture needs max_s > 0, channels ≥ 1 and a positive rate; "
                               f"got max_s={max_s}, channels={channels}, rate={samplerate}")
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.rate, self.channels, self.device = int(samplerate), int(channels), device
        self._ring = np.zeros((round(max_s * samplerate), channels), np.float32)  # [N, C]
        n_blocks = len(self._ring) // MIN_BLOCK_FRAMES + 2
        self._block_frame = np.zeros(n_blocks, np.int64)  # index of the block's first frame
        self._block_adc_s = np.zeros(n_blocks, np.float64)  # its ADC time, perf_counter s
        self._frames = 0  # frames written so far (published after the data)
        self._blocks = 0
        self.overflows = 0  # blocks flagged as input overflow (on JACK: any xrun)
        try:
            self.stream = sd.InputStream(samplerate=samplerate, channels=channels,
                                         device=device, dtype="float32",
                                         callback=self._callback)
        except Exception as err:  # PortAudio raises its own error types
            raise CaptureError(f"cannot open audio input {device!r} at {samplerate} Hz with "
                               f"{channels} channel(s): {err}") from err

    @property
    def max_s(self) -> float:
        return len(self._ring) / self.rate

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()

    def _callback(self, indata: np.ndarray, frames: int, time, status) -> None:
        now = perf_counter()
        ring, n = self._ring, len(self._ring)
        w = self._frames % n
        first = min(frames, n - w)
        ring[w: w + first] = indata[:first]
        if first < frames:
            ring[: frames - first] = indata[first:frames]
        b = self._blocks % len(self._block_frame)
        self._block_frame[b] = self._frames
        adc, current = time.inputBufferAdcTime, time.currentTime
        self._block_adc_s[b] = now - (current - adc if adc and current else 0.0)
        if status.input_overflow:
            self.overflows += 1
        self._blocks += 1
        self._frames += frames

    def frame_at(self, t_s: float) -> int:
        """The index (frames since start) of the input frame that reached the converter at
        perf_counter time t_s (it may be in the future or already gone from the buffer)."""
        frames, blocks = self._frames, self._blocks
        n_meta = len(self._block_frame)
        if blocks == 0:
            raise CaptureError("the input has delivered no audio yet (is the stream started?)")
        idx = np.arange(max(0, blocks - n_meta + 1), blocks) % n_meta  # skip one being rewritten
        start = self._block_frame[idx]
        origin = self._block_adc_s[idx] - start / self.rate  # [n] time of frame 0, per block
        keep = start < frames
        start, origin = start[keep], origin[keep]
        guess = (t_s - origin.min()) * self.rate
        near = np.abs(start - guess) <= WINDOW_S * self.rate
        best = origin[near].min() if near.any() else origin[np.argmin(np.abs(start - guess))]
        return round((t_s - best) * self.rate)

    def take(self, start_s: float, end_s: float) -> np.ndarray:
        """The input between perf_counter times start_s and end_s, mono float32 [T] with
        T = round((end_s − start_s) · rate); channels are averaged."""
        if not end_s > start_s:
            raise CaptureError(f"capture span must end after it starts: {start_s} → {end_s}")
        n = round((end_s - start_s) * self.rate)
        first = self.frame_at(end_s) - n  # timed at its end: the bar the loop leads into
        written = self._frames
        if first + n > written:
            raise CaptureError(
                f"the capture span is not in the buffer yet: it ends "
                f"{(first + n - written) / self.rate * 1e3:.1f} ms after the newest input "
                f"sample")
        out = self._copy(first, n)
        if first < self._frames - len(self._ring):
            raise CaptureError(
                f"the capture span ({n / self.rate:.2f} s) is no longer in the buffer: it "
                f"starts {(self._frames - len(self._ring) - first) / self.rate:.2f} s before "
                f"the oldest sample kept (the buffer keeps {self.max_s:.1f} s)")
        return out.mean(axis=1, dtype=np.float32) if self.channels > 1 else out[:, 0]

    def _copy(self, first: int, n: int) -> np.ndarray:
        ring, size = self._ring, len(self._ring)
        if first < 0:
            raise CaptureError(f"the capture span starts {-first / self.rate:.2f} s before the "
                               f"input stream did")
        idx = (first + np.arange(n)) % size
        return ring[idx]


def read_tail(path: str | Path, seconds: float) -> tuple[np.ndarray, int]:
    """The last `seconds` of an audio file → (pcm mono float32 [T], sample rate), T =
    round(seconds · rate). A WAV still being written (its header counting fewer frames than
    the file holds, or 0) gives the audio actually on disk."""
    path = Path(path)
    if not seconds > 0:
        raise CaptureError(f"{path}: the length to take must be positive, got {seconds}")
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CaptureError(f"{path}: the file is empty")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise CaptureError(f"{path}: not an audio file soundfile can read ({err})") from err
    n = round(seconds * info.samplerate)
    on_disk = _stale_wav_data(path, info)
    if on_disk is not None and on_disk[1] > info.frames:
        audio = _read_raw_tail(path, info, *on_disk, n)
    else:
        _check_length(path, info.frames, n, info.samplerate)
        audio, _ = sf.read(str(path), start=info.frames - n, frames=n, dtype="float32",
                           always_2d=True)
    _check_length(path, len(audio), n, info.samplerate)
    return audio.mean(axis=1, dtype=np.float32), info.samplerate


def _check_length(path: Path, total: int, n: int, rate: int) -> None:
    if total < n:
        raise CaptureError(f"{path}: holds {total / rate:.3f} s of audio ({total} frames), "
                           f"{n / rate:.3f} s were asked for")


def _stale_wav_data(path: Path, info: sf._SoundFileInfo) -> tuple[int, int] | None:
    """(data chunk offset, whole frames on disk after it) of a RIFF/WAVE file whose RIFF size
    does not cover the file (a recording in progress: the header is written at the end, or now
    and then); None for a finished WAV (its header is right, and chunks after the data are
    not audio) and for RF64, W64 and other formats."""
    frame_bytes = _frame_bytes(info)
    if info.format != "WAV" or frame_bytes is None:
        return None
    size = path.stat().st_size
    with open(path, "rb") as f:
        riff = f.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        if struct.unpack("<I", riff[4:8])[0] + 8 >= size:
            return None
        while len(header := f.read(8)) == 8:
            chunk_id, chunk_bytes = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"data":
                return f.tell(), (size - f.tell()) // frame_bytes
            f.seek(chunk_bytes + (chunk_bytes & 1), 1)
    return None


_SUBTYPE_BYTES = {"PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def _frame_bytes(info: sf._SoundFileInfo) -> int | None:
    width = _SUBTYPE_BYTES.get(info.subtype)
    return None if width is None else width * info.channels


def _read_raw_tail(path: Path, info: sf._SoundFileInfo, offset: int, total: int,
                   n: int) -> np.ndarray:
    """The last n frames of the `total` on disk from `offset`, read as headerless samples."""
    _check_length(path, total, n, info.samplerate)
    start = offset + (total - n) * _frame_bytes(info)
    with open(path, "rb") as f:
        f.seek(start)
        with sf.SoundFile(f, mode="r", format="RAW", subtype=info.subtype,
                          samplerate=info.samplerate, channels=info.channels,
                          endian="LITTLE") as raw:
            return raw.read(n, dtype="float32", always_2d=True)
