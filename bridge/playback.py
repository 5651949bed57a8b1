"""Playback in tempo: chunks scheduled on the audio device's own sample clock (sounddevice).

The player counts the frames its output stream has delivered; that count is the clock. When a
job's first chunk arrives, bar 0 of the job is placed `lead_s` ahead of the frame being
delivered (`Player.origin`), and every chunk of the job spans origin + the exact times of its
first and last beat at the device's rate (`musical_time.beats_to_samples`, so the grid is the
DAW's to half a device frame, not a rescaled model-rate grid); its audio, resampled, is fitted
to that span (a sample more or less), so consecutive chunks tile with no gap.
The callback mixes whatever scheduled audio overlaps the block it fills, so a chunk starts on
its bar to the sample, whatever the block size. A chunk that arrives after its start has
passed plays from the frame it reaches (the part already due is counted as late, never
shifted: the bar grid stays where it is). Each chunk's first sample is logged with the DAC time
sounddevice reports for it, so how far the device timeline drifted from the bar grid is
measured, not assumed (`Player.starts`).

Resampling from the model's rate to the device's is done once per chunk with soxr.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np
import soxr

from continuo.server.errors import ContinuoError
from continuo.server.musical_time import Number, beats_to_samples

SWITCH_INTERVAL_S = 0.0005


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
    index: int
    frame: int  # device frame of its first sample
    audio: np.ndarray  # [T] at the device rate
    written: int = 0  # samples already played


@dataclass(frozen=True)
class Start:
    """When chunk `index` began: its frame on the grid, and the DAC times (s, the stream's
    clock) of bar 0 and of its first sample as sounddevice reported them."""

    index: int
    frame: int
    dac_time_s: float
    expected_dac_time_s: float

    @property
    def error_s(self) -> float:
        return self.dac_time_s - self.expected_dac_time_s


@dataclass
class PlayerStats:
    """underflows: blocks the device flagged as underrun while a job played (an xrun anywhere
    in the audio server also counts); underflow_frames: where; late_samples: samples of chunks
    that came after their start; slowest_callback_s: the longest our callback took."""

    underflows: int = 0
    underflow_frames: list[int] = field(default_factory=list)
    late_samples: int = 0
    slowest_callback_s: float = 0.0
    starts: list[Start] = field(default_factory=list)


class Player:
    """Plays chunks on their bars through one sounddevice output stream."""

    def __init__(self, device: int | str | None = None, samplerate: int = 48_000,
                 blocksize: int = 0, latency: str | float = "low", lead_s: float = 0.1,
                 channels: int = 2) -> None:
        import sounddevice as sd

        # The audio callback is Python: it needs the GIL within a fraction of a JACK period
        # (5.3 ms at 256 frames / 48 kHz), and another thread may hold it for the whole switch
        # interval (5 ms by default) before handing over.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.rate, self.channels, self.lead_s = samplerate, channels, lead_s
        self.stats = PlayerStats()
        self._lock = threading.Lock()
        self._chunks: list[Scheduled] = []
        self._frame = 0  # frames delivered so far
        self._origin: int | None = None  # device frame of bar 0 of the current job
        self._origin_dac: float | None = None
        self._dac_at_frame: tuple[int, float] | None = None
        try:
            self.stream = sd.OutputStream(samplerate=samplerate, channels=channels,
                                          device=device, blocksize=blocksize, latency=latency,
                                          dtype="float32", callback=self._callback)
        except Exception as err:  # PortAudio raises its own error types
            raise PlaybackError(f"cannot open audio output {device!r} at {samplerate} Hz: "
                                f"{err}") from err

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()

    def new_job(self) -> None:
        """The next chunk scheduled starts a new bar grid (origin = now + lead)."""
        with self._lock:
            self._origin = None

    def schedule(self, index: int, pcm: np.ndarray, model_rate: int, start_beats: Number,
                 end_beats: Number, tempo: Number) -> int:
        """Queue chunk `index` (mono [T] at model_rate) covering beats [start, end) of its job
        at `tempo`; → the device frame it will start at."""
        audio = pcm if model_rate == self.rate else soxr.resample(pcm, model_rate, self.rate)
        start = beats_to_samples(start_beats, tempo, self.rate)
        n = beats_to_samples(end_beats, tempo, self.rate) - start
        with self._lock:
            if self._origin is None:
                self._origin = self._frame + round(self.lead_s * self.rate)
                self._origin_dac = None
            frame = self._origin + start
            self._chunks.append(Scheduled(index, frame, fit(np.asarray(audio, np.float32), n)))
        return frame

    def _callback(self, outdata: np.ndarray, frames: int, time, status) -> None:
        began = perf_counter()
        outdata.fill(0)
        with self._lock:
            if status.output_underflow and self._origin is not None:  # while a job plays
                self.stats.underflows += 1
                self.stats.underflow_frames.append(self._frame - self._origin)
            start, end = self._frame, self._frame + frames
            dac = time.outputBufferDacTime  # DAC time of this block's first frame
            for chunk in self._chunks:
                self._mix(chunk, outdata, start, end, dac)
            self._chunks = [c for c in self._chunks if c.written < len(c.audio)]
            self._frame = end
            self.stats.slowest_callback_s = max(self.stats.slowest_callback_s,
                                                perf_counter() - began)

    def _mix(self, chunk: Scheduled, out: np.ndarray, start: int, end: int,
             dac: float) -> None:
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
            self._log_start(chunk, dac + offset / self.rate)
        chunk.written += n

    def _log_start(self, chunk: Scheduled, dac_time_s: float) -> None:
        if self._origin_dac is None:  # bar 0's DAC time, from the first chunk that starts
            self._origin_dac = dac_time_s - (chunk.frame - self._origin) / self.rate
        expected = self._origin_dac + (chunk.frame - self._origin) / self.rate
        self.stats.starts.append(Start(chunk.index, chunk.frame, dac_time_s, expected))
