"""The streaming engine: jobs in, chunks out, on one worker thread that owns the model.

Control (generate, param, stop, status, a client gone) arrives on the transport's thread and
changes jobs under one lock; it never runs the model. The worker takes, over and over, the jobs
whose next chunk is due soon, soonest first, at most `max_batch` — a job runs ahead of its
playback deadline by at most `ahead_s` plus the time its next chunk is expected to take (its
length × the wall time per audio second of its chunks so far; plus one block right after a
parameter change, so the change is heard soon) — and generates their next chunks together:
rounds of one batched `TokenStream.advance_many` (each stage decodes every job in one forward
per step; blocks of at least `min_block_s` of tokens, the rest kept for the next chunk). A job
whose buffer holds its chunk leaves the batch: under the lock its chunk is recorded and sent
and the job updated. Jobs join at the next chunk boundary; a job's audio is the same as it
would be alone (same seed, blocks and settings). A job stopped or preempted meanwhile is
dropped at that point: nothing is sent after its `done`. Errors in one job end that job (an
`error` and a `done` with reason "error"); the worker and the other jobs go on.

Messages go out through `send(client, frames)`, which must be thread-safe (the transport queues
them to its socket). Headers are built here (see docs/protocol.md for every field).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from continuo.server.audio import check_samples, load_audio
from continuo.server.continuation_files import model_hashes
from continuo.server.engine.chunks import MAX_CHUNK_BEATS, Chunk, ChunkPlan, chunk_at
from continuo.server.engine.jobs import Job, Prompt
from continuo.server.engine.params import check_params, sampling_preset
from continuo.server.engine.recorder import Recording, pcm_sha256
from continuo.server.engine.stream import TokenStream
from continuo.server.errors import AudioError, ConfigError
from continuo.server.presets import PRESETS_DIR, Preset, load_named_preset
from continuo.server.transport.protocol import (
    ErrorCode,
    Generate,
    Param,
    ProtocolError,
    Stop,
    pack,
)
from continuo.server.transport.security import ClipError, resolve_clip
from continuo.server.watermark import WATERMARK, WatermarkConfig, describe, embed

log = logging.getLogger(__name__)

Send = Callable[[bytes, list[bytes]], None]  # (client identity, frames of one message)
Header = Callable[..., dict[str, Any]]  # (type, **fields) → a numbered header


@dataclass(frozen=True)
class EngineConfig:
    """Where clips come from and recordings go, and the limits every request is held to."""

    out_dir: Path
    clip_root: Path
    max_jobs: int = 4
    max_bars: int = 10_000
    max_prompt_s: float = 60.0
    ahead_s: float = 1.0
    min_block_s: float = 0.24
    watermark: WatermarkConfig | None = WATERMARK  # marks every chunk; None (off) discouraged
    max_batch: int = 16  # jobs whose chunks are generated together in one batch
    preset_dirs: tuple[Path, ...] = (PRESETS_DIR,)  # where clients' preset names are looked up

    def __post_init__(self) -> None:
        for name in ("max_jobs", "max_bars", "max_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a whole number >= 1")
        for name in ("max_prompt_s", "ahead_s", "min_block_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds")

    def limits(self, sample_rate: int) -> dict[str, Any]:
        return {"max_jobs": self.max_jobs, "max_bars": self.max_bars,
                "max_prompt_s": self.max_prompt_s, "max_chunk_beats": MAX_CHUNK_BEATS,
                "max_pcm_bytes": self.max_pcm_bytes(sample_rate)}

    def max_pcm_bytes(self, sample_rate: int) -> int:
        """A PCM prompt of max_prompt_s at up to 4× the model's rate (e.g. 96 kHz for 24 kHz)."""
        return int(self.max_prompt_s * 4 * sample_rate) * 4


class Engine:
    """Runs jobs of one loaded model; see the module doc."""

    def __init__(self, stream: TokenStream, preset: Preset, config: EngineConfig, send: Send,
                 header: Header) -> None:
        self.stream, self.preset, self.config = stream, preset, config
        self._send, self._header = send, header
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="continuo-engine", daemon=True)
        self._model_sha256 = model_hashes(stream.pipeline)

    @property
    def sample_rate(self) -> int:
        return self.stream.sample_rate

    def start(self) -> None:
        self._worker.start()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """End every job (done, reason "shutdown"), stop the worker."""
        with self._cond:
            self._stopping = True
            for job in list(self._jobs.values()):
                self._end(job, "shutdown")
            self._cond.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout_s)

    # --- control (transport thread) -------------------------------------------------------------

    def generate(self, client: bytes, request: Generate, pcm: np.ndarray | None) -> None:
        """Check and queue a job; `accepted` is sent, or ProtocolError raised."""
        preset = self._preset(request.preset)
        plan = self._plan(request)
        params = _checked(request.params)
        with self._cond:  # refused before its clip is read (checked again below)
            self._replaced(client, request)
        prompt = self._prompt(request, pcm)
        seed = preset.seed if request.seed is None else request.seed
        with self._cond:
            replaced = self._replaced(client, request)
            for old in replaced:
                self._end(old, "preempted")
            job_id = f"j{next(self._ids)}-{time.strftime('%Y%m%d-%H%M%S')}"
            sampling = sampling_preset(preset, params)
            recording = Recording(self.config.out_dir, job_id, self.sample_rate,
                                  self._meta(request, prompt, preset, plan, seed))
            recording.log_params(0, params, preset.name)
            job = Job(job_id, client, request.track, plan, prompt, preset, params, sampling,
                      seed, request.loop, recording)
            self._jobs[job_id] = job
            self._cond.notify_all()
        log.info("job %s: track %s, %s, %s bars of %s at %g BPM, chunks of %s beats, preset %s",
                 job_id, job.track, prompt.source, plan.bars or "loop", plan.meter,
                 float(plan.tempo), plan.chunk_beats, preset.name)
        self._send(client, [self._pack("accepted", re=request.seq, job=job_id, track=job.track,
                                       sample_rate=self.sample_rate, tempo=float(plan.tempo),
                                       meter=str(plan.meter), bars=plan.bars,
                                       chunk_beats=float(plan.chunk_beats), preset=preset.name,
                                       seed=seed, loop=job.loop, params=params,
                                       recording=recording.wav_path,
                                       recording_error=recording.error,
                                       total_samples=plan.total_samples)])
        if recording.error:
            self._recording_failed(client, job_id, recording.error)

    def _replaced(self, client: bytes, request: Generate) -> list[Job]:
        """The client's job on the request's track (a new one preempts it), or ProtocolError
        (limit) when the server runs its maximum of other jobs. Called under the lock."""
        running = [j for j in self._jobs.values() if not j.ended]
        replaced = [j for j in running if (j.client, j.track) == (client, request.track)]
        if len(running) - len(replaced) >= self.config.max_jobs:
            raise ProtocolError(ErrorCode.LIMIT, f"{len(running)} jobs are running, the "
                                f"server's limit is {self.config.max_jobs}", seq=request.seq)
        return replaced

    def param(self, client: bytes, request: Param) -> None:
        """Change a job's parameters (and preset) from its next chunk; `accepted` is sent."""
        params = _checked(request.params)
        preset = self._preset(request.preset) if request.preset else None
        with self._cond:
            jobs = self._find(client, request.job, request.track, request.seq)
            for job in jobs:
                job.params = {**job.params, **params}
                job.preset = preset or job.preset
                job.sampling = sampling_preset(job.preset, job.params)
                job.params_rev += 1
                job.param_replies.append(request.seq)
                if not job.busy:  # else the worker answers when its chunk in flight is done
                    self._answer_params(job)
            self._cond.notify_all()

    def _answer_params(self, job: Job) -> None:
        """Reply to the param requests waiting on `job` with the first chunk that will hold
        audio generated with its current params: audio already generated (the buffer left over
        from the last block) plays first. Called under the lock, job not busy."""
        index, left = job.next_index, len(job.buffer)
        while job.plan.n_chunks is None or index < job.plan.n_chunks:
            n_samples = chunk_at(job.plan, index).n_samples
            if left < n_samples:
                break
            left, index = left - n_samples, index + 1
        job.recording.log_params(index, job.params, job.preset.name)
        for seq in job.param_replies:
            self._send(job.client, [self._pack("accepted", re=seq, job=job.id,
                                               params=job.params, preset=job.preset.name,
                                               from_chunk=index)])
        job.param_replies.clear()

    def stop(self, client: bytes, request: Stop) -> None:
        """End the job(s) at once: `done` for each, then `accepted` listing them."""
        with self._cond:
            if request.job is None and request.track is None:
                jobs = [j for j in self._jobs.values() if j.client == client and not j.ended]
            else:
                jobs = self._find(client, request.job, request.track, request.seq)
            for job in jobs:
                self._end(job, "stopped", re=request.seq)
        self._send(client, [self._pack("accepted", re=request.seq, stopped=[j.id for j in jobs])])

    def client_gone(self, client: bytes) -> None:
        """The client stopped answering: its loop jobs end (finite ones play out, recorded)."""
        with self._cond:
            for job in list(self._jobs.values()):
                if job.client == client and job.loop and not job.ended:
                    self._end(job, "client_gone")

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._cond:
            return [{"job": j.id, "track": j.track, "preset": j.preset.name, "params": j.params,
                     "loop": j.loop, "chunks": j.next_index, "samples": j.samples_sent,
                     "ahead_s": _ahead_s(j, now), "misses": j.misses}
                    for j in self._jobs.values() if not j.ended]

    # --- checks ---------------------------------------------------------------------------------

    def _preset(self, name: str | None) -> Preset:
        if name is None:
            return self.preset
        try:
            preset = load_named_preset(name, self.config.preset_dirs)
        except ConfigError as err:
            raise ProtocolError(ErrorCode.UNKNOWN_PRESET, str(err)) from err
        if preset.model_path.resolve() != self.preset.model_path.resolve():
            raise ProtocolError(ErrorCode.UNKNOWN_PRESET, f"preset {name!r} uses model folder "
                                f"{preset.model_path}; this server runs {self.preset.model_path}")
        return preset

    def _plan(self, request: Generate) -> ChunkPlan:
        if request.bars is not None and request.bars > self.config.max_bars:
            raise ProtocolError(ErrorCode.LIMIT, f"bars {request.bars} is over the server's limit "
                                f"of {self.config.max_bars}", seq=request.seq)
        try:
            return ChunkPlan.of(request.tempo, request.meter, request.chunk_beats,
                                self.sample_rate, None if request.loop else request.bars)
        except ConfigError as err:
            raise ProtocolError(ErrorCode.BAD_FIELD, str(err), seq=request.seq) from err

    def _prompt(self, request: Generate, pcm: np.ndarray | None) -> Prompt:
        limit = self.config.max_prompt_s
        if pcm is not None and request.sr is not None and len(pcm) > limit * request.sr:
            raise ProtocolError(ErrorCode.LIMIT, f"prompt of {len(pcm) / request.sr:.1f} s is "
                                f"over the server's limit of {limit:g} s", seq=request.seq)
        try:
            if pcm is not None and request.sr is not None:
                return Prompt(check_samples(pcm[None], "PCM prompt")[0], request.sr, "pcm")
            path = resolve_clip(self.config.clip_root, request.clip or "")
            audio = load_audio(path, max_seconds=limit)
            return Prompt(audio.samples.mean(axis=0), audio.sample_rate, str(path))
        except (AudioError, ClipError) as err:
            raise ProtocolError(ErrorCode.BAD_CLIP, str(err), seq=request.seq) from err

    def _find(self, client: bytes, job_id: str | None, track: str | None,
              seq: int) -> list[Job]:
        jobs = [j for j in self._jobs.values() if not j.ended and j.client == client
                and (job_id is None or j.id == job_id) and (track is None or j.track == track)]
        if not jobs:
            what = (f"job {job_id!r}" if job_id else f"track {track!r}" if track else "job")
            raise ProtocolError(ErrorCode.UNKNOWN_JOB, f"no running {what} for this client",
                                job_id, seq)
        return jobs

    def _meta(self, request: Generate, prompt: Prompt, preset: Preset, plan: ChunkPlan,
              seed: int) -> dict[str, Any]:
        return {"track": request.track, "loop": request.loop,
                "prompt": {"source": prompt.source, "sha256": pcm_sha256(prompt.samples),
                           "sample_rate": prompt.sample_rate,
                           "seconds": round(len(prompt.samples) / prompt.sample_rate, 4),
                           "downmixed": True},
                "model_dir": str(preset.model_path), "model_sha256": self._model_sha256,
                "preset": preset.model_dump(mode="json"),
                "seed": seed, "tempo": float(plan.tempo), "meter": str(plan.meter),
                "bars": plan.bars, "chunk_beats": str(plan.chunk_beats),
                "watermark": describe(self.config.watermark)}

    # --- the worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                jobs = self._next_batch()
                if self._stopping:
                    return
                if not jobs:
                    continue
                work = []
                for job in jobs:
                    job.busy = True
                    work.append(_Work(job, job.sampling, chunk_at(job.plan, job.next_index),
                                      job.params_rev,
                                      {"params": dict(job.params), "preset": job.preset.name}))
            self._make_chunks(work)

    def _next_batch(self) -> list[Job]:
        """The runnable jobs whose next chunk is due soon, soonest first (new jobs first), at
        most `max_batch`; or none after waiting until one may be. Called under the lock."""
        now, ready, wake = time.monotonic(), [], 1.0
        for job in self._jobs.values():
            if job.ended or job.busy:
                continue
            due = job.due(job.next_index)
            pending = job.params_rev != job.heard_rev  # a change not yet in any audio
            # start early enough to finish by ahead_s before it is due: a long chunk (4 beats
            # at 80 BPM = 3 s) takes longer to make than ahead_s alone would allow
            slack = (self.config.ahead_s + (self.config.min_block_s if pending else 0)
                     + job.work_s(job.next_index))
            if due is not None and due - now > slack:
                wake = min(wake, due - now - slack)
                continue
            ready.append((-1e18 + job.created if due is None else due, job))
        if not ready and not self._stopping:
            self._cond.wait(timeout=max(wake, 0.001))
        ready.sort(key=lambda item: item[0])
        return [job for _, job in ready[: self.config.max_batch]]

    def _make_chunks(self, work: list[_Work]) -> None:
        """Generate the next chunk of every job in `work` together: rounds of one batched
        `advance_many` for the jobs whose buffer does not hold their chunk yet; a job leaves the
        batch (its chunk sent) as soon as it has its chunk. A job that fails ends alone."""
        work = [w for w in work if self._opened(w)]
        while work:
            need = [w for w in work if not (w.job.ended or w.has_chunk)]
            if need:
                self._advance(need)
            done = [w for w in work if w.job.ended or w.has_chunk]
            for w in done:
                self._finish(w)
            work = [w for w in work if w not in done]

    def _opened(self, w: _Work) -> bool:
        """Start the job's stream if new (its prompt encoded); False (job ended) if it fails."""
        job = w.job
        w.fresh = not w.has_chunk
        if not w.fresh:  # the buffer left over from an earlier block holds the chunk
            w.label = job.buffer_label or w.label
        if job.stream is None:
            try:
                p = job.prompt
                job.stream = self.stream.start(p.samples, p.sample_rate, job.seed,
                                               job.preset.context_s)
            except Exception as err:  # one job's failure must not stop the others
                self._failed(w, err)
                return False
        return True

    def _advance(self, need: list[_Work]) -> None:
        """One round: a block for every job in `need` in one batched advance (if that fails,
        each job alone, so the failing one ends and the others go on). Only the worker
        touches the jobs' stream, buffer, buffer_label and lead-in."""
        stream = self.stream
        min_block = round(self.config.min_block_s * stream.sample_rate)
        frames = [stream.frames_for(w.job.stream, max(w.chunk.n_samples - len(w.job.buffer),
                                                      min_block)) for w in need]
        started = time.perf_counter()
        try:
            results = stream.advance_many([w.job.stream for w in need], frames,
                                          [w.sampling for w in need])
        except Exception as err:
            if len(need) == 1:
                self._failed(need[0], err)
                return
            for w in need:
                self._advance([w])
            return
        elapsed = time.perf_counter() - started
        for w, (block, state) in zip(need, results, strict=True):
            job = w.job
            job.stream = state
            if block.lead_in is not None:
                job.lead_in = block.lead_in
            job.buffer = np.concatenate([job.buffer, block.audio])
            job.buffer_label = w.label
            w.share_s += elapsed / len(need)
            w.wall_s += elapsed
            w.rounds, w.batch_rows = w.rounds + 1, w.batch_rows + len(need)

    def _finish(self, w: _Work) -> None:
        """Cut the job's chunk from its buffer, watermark it, and send it (under the lock)."""
        job, chunk, rate = w.job, w.chunk, self.stream.sample_rate
        pcm = None
        if not job.ended:
            pcm, job.buffer = job.buffer[:chunk.n_samples], job.buffer[chunk.n_samples:]
            if mark := self.config.watermark:  # chunk 0's lead-in: the samples just before it
                pcm = embed(pcm, rate, chunk.start_sample, config=mark)
                if chunk.index == 0 and job.lead_in is not None:
                    job.lead_in = embed(job.lead_in, rate, -len(job.lead_in), config=mark)
        with self._cond:
            job.busy = False
            job.generate_s += w.share_s
            job.wall_s += w.wall_s
            job.rounds, job.batch_rows = job.rounds + w.rounds, job.batch_rows + w.batch_rows
            if w.fresh:
                job.heard_rev = w.rev
            if not job.ended and pcm is not None:
                self._emit(job, chunk, pcm, w.label)
            if job.param_replies and not job.ended:
                self._answer_params(job)
            self._cond.notify_all()

    def _failed(self, w: _Work, err: Exception) -> None:
        log.error("job %s failed", w.job.id, exc_info=err)
        with self._cond:
            w.job.busy = False
            self._fail(w.job, err)

    def _emit(self, job: Job, chunk: Chunk, pcm: np.ndarray, label: dict[str, Any]) -> None:
        """Record and send a chunk (label: the params and preset it was generated with); end the
        job after its last. Called under the lock."""
        if cut := job.recording.write(pcm):
            self._recording_failed(job.client, job.id, cut)
        now = time.monotonic()
        if job.t0 is None:
            job.t0 = now
            job.first_chunk_s = now - job.created
        late = now - (job.due(chunk.index) or now)
        if late > 0:
            job.misses += 1
            job.worst_late_s = max(job.worst_late_s, late)
        extra = {}
        if chunk.index == 0 and job.lead_in is not None:
            extra["lead_in"] = np.ascontiguousarray(job.lead_in, "<f4").tobytes()
        header = self._pack(
            "chunk", job=job.id, track=job.track, index=chunk.index, bar=chunk.bar,
            beat=float(chunk.beat), beat_exact=[chunk.beat.numerator, chunk.beat.denominator],
            start_sample=chunk.start_sample, n_samples=chunk.n_samples,
            sample_rate=self.sample_rate, last=chunk.last, **label, **extra)
        self._send(job.client, [header, np.ascontiguousarray(pcm, "<f4").tobytes()])
        job.next_index += 1
        job.samples_sent += chunk.n_samples
        if chunk.last:
            self._end(job, "finished")

    def _fail(self, job: Job, err: Exception) -> None:
        code = ErrorCode.BAD_CLIP if isinstance(err, AudioError) else ErrorCode.INTERNAL
        self._send(job.client, [self._pack("error", code=code.value, job=job.id, re=None,
                                           message=f"job {job.id}: {err}")])
        self._end(job, "error")

    def _recording_failed(self, client: bytes, job_id: str, error: str) -> None:
        """The job's recording stopped (a read-only or full disk): tell the client, whose job
        plays on. The error's `job` is nil, so it does not end the job's stream."""
        self._send(client, [self._pack("error", code=ErrorCode.RECORDING.value, job=None,
                                       re=None, message=f"job {job_id}: {error}; the job "
                                       "plays on without a recording")])

    def _end(self, job: Job, reason: str, re: int | None = None) -> None:
        """Close the recording, send `done`, forget the job. Called under the lock."""
        if job.ended:
            return
        job.ended = True
        summary = job.summary()
        job.recording.close(reason, **summary)
        self._jobs.pop(job.id, None)
        self._send(job.client, [self._pack("done", job=job.id, track=job.track, reason=reason,
                                           re=re, recording=job.recording.wav_path,
                                           sidecar=job.recording.sidecar_path,
                                           recording_error=job.recording.error, **summary)])
        log.info("job %s: %s after %d chunks (%.2f s), %d late, first chunk %s s, "
                 "generation %s× realtime", job.id, reason, summary["chunks"],
                 job.samples_sent / self.sample_rate, job.misses, summary["first_chunk_s"],
                 summary["realtime_factor"])

    def _pack(self, kind: str, **fields: Any) -> bytes:
        return pack(self._header(kind, **fields))[0]


def _checked(params: dict[str, float]) -> dict[str, float]:
    try:
        return check_params(params)
    except ConfigError as err:
        raise ProtocolError(ErrorCode.BAD_FIELD, str(err)) from err


def _ahead_s(job: Job, now: float) -> float | None:
    due = job.due(job.next_index)
    return None if due is None else round(due - now, 4)


@dataclass(eq=False)  # compared by identity (the worker's lists of work)
class _Work:
    """One job's chunk in the worker's hands: the sampling, chunk and params revision taken
    under the lock, the label (params, preset) its audio will carry, whether a block is made
    for it (`fresh`), and the worker seconds it took (its share of the rounds, and whole)."""

    job: Job
    sampling: Preset
    chunk: Chunk
    rev: int
    label: dict[str, Any]
    fresh: bool = True
    share_s: float = 0.0
    wall_s: float = 0.0
    rounds: int = 0
    batch_rows: int = 0

    @property
    def has_chunk(self) -> bool:
        """The job's buffer holds the whole chunk (nothing more to generate for it)."""
        return len(self.job.buffer) >= self.chunk.n_samples
