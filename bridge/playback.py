"""Playback in tempo: chunks scheduled on the audio device's own sample clock (sounddevice).

The player counts the frames its output stream has delivered; that count is the clock. A job's
bar 0 is a device frame (`start_job`: the frame the bridge chose from its tempo clock with
`frame_at`, or `lead_s` ahead of the frame being delivered), and every chunk of the job spans
origin + the exact times of its
first and last beat at the device's rate (`musical_time.beats_to_samples`, so the grid is the
DAW's to half a device frame, not a rescaled model-rate grid); its audio, resampled, is fitted
to that span (a sample more or less), so consecutive chunks tile with no gap.
The callback mixes whatever scheduled audio overlaps the block it fills, so a chunk starts on
its bar to the sample, whatever the block size. A chunk that arrives after its start has
passed plays from the frame it reaches (the part already due is counted as late, never
shifted: the bar grid stays where it is). Each chunk's first sample is logged with the DAC time
sounddevice reports for it, so how far the device timeline drifted from the bar grid is
measured, not assumed (`Player.starts`), and with the monotonic time it reaches the DAC
(trigger-to-sound latency). PortAudio's JACK host API stamps a block with JACK's clock estimate
at the moment our callback wakes (jack_frame_time), so the raw stamp carries the callback's
wake-up delay (over a millisecond now and then on a loaded 2-core machine); `DeviceClock` takes
it out (a delay only ever adds, so the earliest stamp of recent blocks is the cycle's own),
while a step in the device timeline (a skipped cycle) still shows within `CLOCK_WINDOW_S`.

A job that starts while another plays takes over at its bar 0 with an equal-power crossfade
(`fade_s`); `stop_job` fades a job out from the next block. A job's first chunk fades in over
the same time, so starting mid-note never clicks.

Resampling from the model's rate to the device's is done once per chunk with soxr.

A stream that stops by itself is `lost` (PortAudio marks a JACK stream inactive when the JACK
server quits); such a stream can be neither stopped nor closed (PortAudio hangs), so `close`
leaves it, and PortAudio, be (the bridge then plays on as files only).
"""

from __future__ import annotations

import atexit
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import numpy as np
import soxr

from continuo.server.errors import ContinuoError
from continuo.server.musical_time import Number, beats_to_samples

SWITCH_INTERVAL_S = 0.0005
CLOCK_WINDOW_S = 0.1


class PlaybackError(ContinuoError):
    """The audio device could not be opened or used."""


def fit(audio: np.ndarray, n: int) -> np.ndarray:
    """audio [T] cut or padded (repeating its last sample) to n samples."""
    if len(audio) >= n:
        return audio[:n]
    pad = np.full(n - len(audio), audio[-1] if len(audio) else 0.0, np.float32)
    return np.concatenate([audio, pad])


@dataclass
class Scheduled:
    job: str
    index: int
    frame: int  # device frame of its first sample
    audio: np.ndarray  # [T] at the device rate
    written: int = 0  # samples already played


@dataclass
class Timeline:
    """A job on the device: the frame of its bar 0, where it ends (a newer job or a stop took
    over: faded out over [end - fade, end)), and the DAC time of bar 0 once known."""

    origin: int
    end: int | None = None
    origin_dac: float | None = None


@dataclass(frozen=True)
class Start:
    """When chunk `index` of `job` began: its frame on the grid, the DAC times (s, the stream's
    clock) it had and should have had (from the job's first chunk), and the monotonic time
    (time.perf_counter) its first sample reached the DAC."""

    job: str
    index: int
    frame: int
    dac_time_s: float
    expected_dac_time_s: float
    wall_s: float

    @property
    def error_s(self) -> float:
        return self.dac_time_s - self.expected_dac_time_s


@dataclass
class PlayerStats:
    """underflows: blocks the device flagged as underrun while a job played (an xrun anywhere
    in the audio server also counts); underflow_frames: the device frames they began at;
    late_samples: samples of chunks that came after their start; slowest_callback_s: the
    longest our callback took."""

    underflows: int = 0
    underflow_frames: list[int] = field(default_factory=list)
    late_samples: int = 0
    slowest_callback_s: float = 0.0
    starts: list[Start] = field(default_factory=list)


class DeviceClock:
    """The device's DAC clock, from the stamps of the blocks it asked for.

    Each stamp is the DAC time of a block's first frame as reported when the callback ran; it
    is late by however long the callback took to wake, never early. The DAC time of a frame is
    its frame time plus the smallest (stamp - frame time) over the blocks of the last
    `window_s`: wake-up delays drop out, a jump of the timeline against the frame count (a
    cycle the device skipped) shows once the window has passed it."""

    def __init__(self, rate: int, window_s: float = CLOCK_WINDOW_S) -> None:
        self.rate, self.window = rate, round(window_s * rate)
        self._offsets: deque[tuple[int, float]] = deque()  # (frame, stamp - frame / rate)

    def observe(self, frame: int, stamp_s: float) -> float:
        """A block starting at `frame` was stamped `stamp_s` → its first frame's DAC time."""
        offsets = self._offsets
        offset = stamp_s - frame / self.rate
        while offsets and offsets[-1][1] >= offset:  # a monotone deque: minimum at the front
            offsets.pop()
        offsets.append((frame, offset))
        while offsets[0][0] < frame - self.window:
            offsets.popleft()
        return frame / self.rate + offsets[0][1]


def ramp(n: int, rising: bool) -> np.ndarray:
    """Equal-power fade of n samples: sin (rising) or cos (falling) of a quarter turn."""
    x = (np.arange(n, dtype=np.float32) + 0.5) / max(n, 1) * (np.pi / 2)
    return np.sin(x) if rising else np.cos(x)


class Player:
    """Plays chunks on their bars through one sounddevice output stream."""

    def __init__(self, device: int | str | None = None, samplerate: int = 48_000,
                 blocksize: int = 0, latency: str | float = "low", lead_s: float = 0.1,
                 channels: int = 2, fade_s: float = 0.01) -> None:
        import sounddevice as sd

        # The audio callback is Python: it needs the GIL within a fraction of a JACK period
        # (5.3 ms at 256 frames / 48 kHz), and another thread may hold it for the whole switch
        # interval (5 ms by default) before handing over.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.rate, self.channels, self.lead_s = samplerate, channels, lead_s
        self.fade = max(1, round(fade_s * samplerate))
        self.stats = PlayerStats()
        self._lock = threading.Lock()
        self._chunks: list[Scheduled] = []
        self._jobs: dict[str, Timeline] = {}
        self._frame = 0  # frames delivered so far
        self._first_origin: int | None = None
        self._wall_at: tuple[int, float] | None = None  # (frame, monotonic time it hits the DAC)
        self._clock = DeviceClock(samplerate)
        self._started = self._closed = False
        self.device_name = "the default" if device is None else repr(device)
        try:
            self.stream = sd.OutputStream(samplerate=samplerate, channels=channels,
                                          device=device, blocksize=blocksize, latency=latency,
                                          dtype="float32", callback=self._callback)
        except Exception as err:  # PortAudio raises its own error types
            raise PlaybackError(f"cannot open audio output {self.device_name} at {samplerate} "
                                f"Hz: {err}") from err
        self.device_name = _device_name(sd, self.stream.device, self.device_name)

    def start(self) -> None:
        try:
            self.stream.start()
        except Exception as err:  # PortAudio raises its own error types
            raise PlaybackError(f"cannot start audio output {self.device_name}: {err}") from err
        self._started = True

    @property
    def lost(self) -> str | None:
        """Why the started stream stopped by itself (see the module doc), or None while it
        plays (and before `start`, after `close`)."""
        if self._started and not self._closed and not self.stream.active:
            return (f"output {self.device_name} stopped by itself (its audio server quit or "
                    "the device went away)")
        return None

    def close(self) -> None:
        """Stop and close the stream; a lost one is left as it is, and sounddevice's exit
        handler, which would stop it too (and hang), is unregistered."""
        if self._closed:
            return
        if self.lost:
            import sounddevice as sd

            atexit.unregister(sd._exit_handler)
        else:
            self.stream.stop()
            self.stream.close()
        self._closed = True

    @property
    def output_latency_s(self) -> float:
        return float(self.stream.latency)

    def frame_at(self, t_s: float) -> int:
        """The device frame that reaches the DAC at monotonic time t_s (from the last block's
        timing; before the first block: the next frame + lead)."""
        with self._lock:
            if self._wall_at is None:
                return self._frame + round(self.lead_s * self.rate)
            frame, wall = self._wall_at
        return frame + round((t_s - wall) * self.rate)

    def earliest_frame(self) -> int:
        """The first frame a job may start at: lead_s after the frame being delivered."""
        with self._lock:
            return self._frame + round(self.lead_s * self.rate)

    def start_job(self, job: str, origin: int | None = None) -> int:
        """Put bar 0 of `job` at device frame `origin` (None: `earliest_frame`); every other
        job fades out into it. → the origin."""
        origin = self.earliest_frame() if origin is None else max(origin, self.earliest_frame())
        with self._lock:
            for name, timeline in self._jobs.items():
                if name != job and (timeline.end is None or timeline.end > origin + self.fade):
                    self._end(name, origin)
            self._jobs[job] = Timeline(origin)
            if self._first_origin is None:
                self._first_origin = origin
        return origin

    def stop_job(self, job: str | None = None) -> None:
        """Fade `job` (None: every job) out from the frame being delivered."""
        with self._lock:
            for name in [job] if job is not None else list(self._jobs):
                if name in self._jobs:
                    self._end(name, self._frame)

    def schedule(self, job: str, index: int, pcm: np.ndarray, model_rate: int,
                 start_beats: Number, end_beats: Number, tempo: Number) -> int | None:
        """Queue chunk `index` of `job` (mono [T] at model_rate) covering beats [start, end) of
        the job at `tempo`; → the device frame it starts at (None: the job has ended)."""
        audio = pcm if model_rate == self.rate else soxr.resample(pcm, model_rate, self.rate)
        start = beats_to_samples(start_beats, tempo, self.rate)
        n = beats_to_samples(end_beats, tempo, self.rate) - start
        audio = fit(np.asarray(audio, np.float32), n).copy()
        if index == 0:
            head = min(self.fade, len(audio))
            audio[:head] *= ramp(self.fade, rising=True)[:head]
        with self._lock:
            timeline = self._jobs.get(job)
            if timeline is None:
                return None
            chunk = Scheduled(job, index, timeline.origin + start, audio)
            if timeline.end is not None:
                _fade_out(chunk, timeline.end - self.fade, self.fade)
            if len(chunk.audio):
                self._chunks.append(chunk)
        return timeline.origin + start

    def playing(self, job: str) -> bool:
        """Whether any of the job's audio is still to play."""
        with self._lock:
            return any(c.job == job for c in self._chunks)

    def take_starts(self) -> list[Start]:
        """The chunk starts logged since the last call (and forget them)."""
        with self._lock:
            starts, self.stats.starts = self.stats.starts, []
        return starts

    def _end(self, job: str, at: int) -> None:
        """Under the lock: `job` fades out over [at, at + fade) and ends there."""
        self._jobs[job].end = at + self.fade
        for chunk in self._chunks:
            if chunk.job == job:
                _fade_out(chunk, at, self.fade)

    def _callback(self, outdata: np.ndarray, frames: int, time, status) -> None:
        began = perf_counter()
        outdata.fill(0)
        with self._lock:
            if status.output_underflow and self._first_origin is not None:
                self.stats.underflows += 1
                self.stats.underflow_frames.append(self._frame)
            start, end = self._frame, self._frame + frames
            stamp = time.outputBufferDacTime  # DAC time of this block's first frame, as stamped
            wall = began + (stamp - time.currentTime)  # … on the monotonic clock
            dac = self._clock.observe(start, stamp)
            self._wall_at = (start, wall)
            for chunk in self._chunks:
                self._mix(chunk, outdata, start, end, dac, wall)
            self._chunks = [c for c in self._chunks if c.written < len(c.audio)]
            self._jobs = {name: t for name, t in self._jobs.items()
                          if t.end is None or t.end > start
                          or any(c.job == name for c in self._chunks)}
            self._frame = end
            self.stats.slowest_callback_s = max(self.stats.slowest_callback_s,
                                                perf_counter() - began)

    def _mix(self, chunk: Scheduled, out: np.ndarray, start: int, end: int,
             dac: float, wall: float) -> None:
        first = chunk.frame + chunk.written  # the next sample's frame
        if first >= end:
            return
        if first < start:  # arrived late: skip what is already due
            skip = min(start - first, len(chunk.audio) - chunk.written)
            chunk.written += skip
            self.stats.late_samples += skip
            first = start
        n = min(end - first, len(chunk.audio) - chunk.written)
        if n <= 0:
            return
        offset = first - start
        out[offset: offset + n] += chunk.audio[chunk.written: chunk.written + n, None]
        if chunk.written == 0:
            self._log_start(chunk, dac + offset / self.rate, wall + offset / self.rate)
        chunk.written += n

    def _log_start(self, chunk: Scheduled, dac_time_s: float, wall_s: float) -> None:
        timeline = self._jobs.get(chunk.job)
        if timeline is None:
            return
        if timeline.origin_dac is None:  # bar 0's DAC time, from the first chunk that starts
            timeline.origin_dac = dac_time_s - (chunk.frame - timeline.origin) / self.rate
        expected = timeline.origin_dac + (chunk.frame - timeline.origin) / self.rate
        self.stats.starts.append(Start(chunk.job, chunk.index, chunk.frame, dac_time_s,
                                       expected, wall_s))


def _device_name(sd: Any, index: int, fallback: str) -> str:
    """'system' (JACK Audio Connection Kit): the device's name and audio system, for messages."""
    try:
        info = sd.query_devices(index)
        return f"{info['name']!r} ({sd.query_hostapis(info['hostapi'])['name']})"
    except Exception:  # PortAudio raises its own error types; the name is only for messages
        return fallback


def _fade_out(chunk: Scheduled, at: int, n: int) -> None:
    """Fade the chunk out over frames [at, at + n) and cut it there (in place)."""
    keep = max(0, at + n - chunk.frame)
    audio = chunk.audio[:keep].copy()
    lo = at - chunk.frame
    fade = ramp(n, rising=False)
    a, b = max(lo, 0), min(lo + n, len(audio))
    if a < b:
        audio[a:b] *= fade[a - lo: b - lo]
    chunk.audio = audio
