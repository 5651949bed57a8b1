"""One soak client: a performer on its own thread, with its own random.Random(seed), playing a
real server through `continuo.bridge.client.Client` until the soak's deadline or action budget.

Each action, after a random pause spent listening (chunks, done, heartbeats): start a loop job
(a random track, tempo, meter, chunk length, params, seed, sometimes a preset; a new job on a
busy track preempts the old one), stop one, change params (temperature, top_k, top_p,
variation, anywhere in PARAM_RANGES), switch a job's preset, ask `status`, or disconnect: close
the socket mid-stream and connect again after a pause, half the time with the same identity
(the jobs come back to the new connection) and half the time as a new client (the old jobs are
orphans; the server must end them with reason `client_gone`). Every job is remembered with the
reason it must end with, which the recordings are checked against at the end.

Refusals the server is right to give are counted, not failures: `limit` on a generate when the
server's job limit is reached, `unknown_preset` for a preset of another model folder. Anything
else the server says wrong — another error code, a `done` the performer did not cause, a chunk
off the chunk plan — is a problem, as is any exception on the thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuo.bridge.client import Client, Event, ServerError
from continuo.server.engine.chunks import ChunkPlan
from continuo.server.transport.protocol import PARAM_RANGES, ErrorCode

ACTIONS = {"start": 0.24, "stop": 0.12, "param": 0.32, "preset": 0.12, "disconnect": 0.10,
           "status": 0.10}  # relative weights of the random actions
TRACKS = ("a", "b")
METERS = ("4/4", "3/4", "5/4", "6/8", "7/8")
RECONNECT_PAUSE_S = (0.0, 1.5)  # well within the server's 5 s peer timeout
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Setup:
    """What every performer of one soak shares: where, what to play, the bounds."""

    endpoint: str
    clip: str  # under the server's clip root
    sample_rate: int
    chunk_beats: tuple[float, ...]
    tempo_bpm: tuple[float, float]  # the range of tempos
    presets: tuple[str, ...]  # switched to at random
    foreign_presets: frozenset[str]  # of another model folder: `unknown_preset` is right
    gap_s: tuple[float, float]  # pause between two actions of one performer
    deadline: float  # monotonic
    budget: ActionBudget


class ActionBudget:
    """The soak's cap on actions, shared by every performer (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True


@dataclass
class JobTrack:
    """A job as its performer knows it: the chunk plan it must follow, the last chunk heard,
    and why it must end (None while it should run)."""

    job: str
    plan: ChunkPlan
    track: str
    last_index: int = -1
    chunks_heard: int = 0
    expected_end: str | None = None
    done_reason: str | None = None


@dataclass
class Tally:
    """What one performer did and saw."""

    actions: Counter = field(default_factory=Counter)  # kind → count
    refused: Counter = field(default_factory=Counter)  # "kind:code" → count
    chunks_heard: int = 0
    reconnects: Counter = field(default_factory=Counter)  # "same identity" / "new identity"
    problems: list[str] = field(default_factory=list)


class Performer:
    """One client of the soak; see the module doc. `run` on a thread of its own; `jobs` holds
    every job it started."""

    def __init__(self, index: int, setup: Setup, seed: int) -> None:
        self.index, self.setup, self.rng = index, setup, random.Random(seed)
        self.tally = Tally()
        self.jobs: dict[str, JobTrack] = {}
        self._generation = 0
        self._client: Client | None = None

    # --- the thread -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._client = self._connect()
            while time.monotonic() < self.setup.deadline:
                self._listen(self.rng.uniform(*self.setup.gap_s))
                if time.monotonic() >= self.setup.deadline or not self.setup.budget.take():
                    break
                kind = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
                self.tally.actions[kind] += 1
                getattr(self, f"_{kind}")()
            self._finish()
        except Exception as err:  # recorded; the soak fails on any problem
            self.tally.problems.append(f"performer {self.index}: {type(err).__name__}: {err}")
        finally:
            if self._client is not None:
                self._client.close()

    def _finish(self) -> None:
        """Stop every job this client still has, and hear their `done`."""
        for track in self._live():
            track.expected_end = "stopped"
        for header in self._client.stop():
            self._done(header)
        self._listen(0.2)

    # --- actions --------------------------------------------------------------------------------

    def _start(self) -> None:
        rng, setup = self.rng, self.setup
        track = rng.choice(TRACKS)
        tempo, meter = round(rng.uniform(*setup.tempo_bpm), 1), rng.choice(METERS)
        chunk_beats = rng.choice(setup.chunk_beats)
        preset = rng.choice(setup.presets) if rng.random() < 0.3 else None
        try:
            accepted = self._client.generate(
                clip=setup.clip, tempo=tempo, meter=meter, chunk_beats=chunk_beats, loop=True,
                track=track, params=self._params(), seed=rng.randrange(2**31), preset=preset)
        except ServerError as err:
            self._refused("start", err, preset, limit_ok=True)
            return
        for old in self._live():
            if old.track == track:
                old.expected_end = "preempted"
        plan = ChunkPlan.of(tempo, meter, chunk_beats, setup.sample_rate)
        self.jobs[accepted["job"]] = JobTrack(accepted["job"], plan, track)

    def _stop(self) -> None:
        live = self._live()
        if not live:
            self._client.stop()  # all of this client's jobs: none
            return
        track = self.rng.choice(live)
        track.expected_end = "stopped"
        for header in self._client.stop(job=track.job):
            self._done(header)

    def _param(self) -> None:
        live = self._live()
        if live:
            accepted = self._client.param(job=self.rng.choice(live).job, params=self._params())
            self._check(accepted.get("from_chunk", -1) >= 0, f"param reply {accepted}")
        else:
            self._status()

    def _preset(self) -> None:
        live = self._live()
        if not live:
            self._status()
            return
        preset = self.rng.choice(self.setup.presets)
        try:
            accepted = self._client.param(job=self.rng.choice(live).job, preset=preset)
        except ServerError as err:
            self._refused("preset", err, preset, limit_ok=False)
            return
        self._check(preset not in self.setup.foreign_presets,
                    f"preset {preset} of another model was accepted")
        self._check(accepted.get("preset") == Path(preset).stem,
                    f"preset switch to {preset} answered {accepted}")

    def _status(self) -> None:
        status = self._client.status()
        self._check(isinstance(status.get("jobs"), list), f"status reply {status}")

    def _disconnect(self) -> None:
        """Close mid-stream; come back as ourselves (jobs kept) or as a new client (orphans)."""
        self._client.close()
        same = self.rng.random() < 0.5
        if not same:
            for track in self._live():
                track.expected_end = "client_gone"
            self._generation += 1
        self.tally.reconnects["same identity" if same else "new identity"] += 1
        time.sleep(self.rng.uniform(*RECONNECT_PAUSE_S))
        self._client = self._connect()

    # --- listening ------------------------------------------------------------------------------

    def _listen(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            event = self._client.recv(timeout_s=left)
            if event is not None:
                self._heard(event)

    def _heard(self, event: Event) -> None:
        kind = event.kind
        if kind == "chunk":
            self._chunk(event)
        elif kind == "done":
            self._done(event.header)
        elif kind == "error":
            self.tally.problems.append(f"performer {self.index}: unexpected error {event.header}")
        elif kind != "heartbeat":
            self.tally.problems.append(f"performer {self.index}: unexpected {kind} message")

    def _chunk(self, event: Event) -> None:
        header = event.header
        track = self.jobs.get(event.job)
        if track is None or track.expected_end == "client_gone":
            self.tally.problems.append(f"performer {self.index}: chunk of a job not ours: "
                                       f"{event.job}")
            return
        index, plan = header["index"], track.plan
        start, end = plan.start_sample(index), plan.start_sample(index + 1)
        self._check(index > track.last_index and header["start_sample"] == start
                    and header["n_samples"] == end - start == len(event.pcm),
                    f"job {track.job}: chunk {index} after {track.last_index} at "
                    f"{header['start_sample']} ({header['n_samples']} samples) is off the plan "
                    f"({start}, {end - start} samples)")
        track.last_index, track.chunks_heard = index, track.chunks_heard + 1
        self.tally.chunks_heard += 1

    def _done(self, header: dict[str, Any]) -> None:
        track = self.jobs.get(header.get("job"))
        if track is None:
            self.tally.problems.append(f"performer {self.index}: done of a job not ours {header}")
            return
        reason = header.get("reason")
        if track.done_reason is None:
            track.done_reason = reason
            self._check(reason == track.expected_end,
                        f"job {track.job} ended {reason!r}, expected {track.expected_end!r}")

    # --- helpers --------------------------------------------------------------------------------

    def _connect(self) -> Client:
        identity = f"soak-{self.index}-{self._generation}".encode()
        client = Client(self.setup.endpoint, timeout_s=REQUEST_TIMEOUT_S,
                        name=f"soak-{self.index}", identity=identity)
        client.hello()
        return client

    def _live(self) -> list[JobTrack]:
        return [t for t in self.jobs.values() if t.expected_end is None and t.done_reason is None]

    def _params(self) -> dict[str, float]:
        """A random subset (at least one) of the live parameters, anywhere in their ranges."""
        names = self.rng.sample(list(PARAM_RANGES), self.rng.randint(1, len(PARAM_RANGES)))
        params = {name: round(self.rng.uniform(*PARAM_RANGES[name]), 3) for name in names}
        if "top_k" in params:
            params["top_k"] = float(round(params["top_k"]))
        return params

    def _refused(self, kind: str, err: ServerError, preset: str | None, limit_ok: bool) -> None:
        """A refusal: counted when the server is right to refuse (its job limit, where
        `limit_ok`; a preset of another model), else a problem."""
        self.tally.refused[f"{kind}:{err.code.value}"] += 1
        right = (limit_ok and err.code == ErrorCode.LIMIT) or (
            err.code == ErrorCode.UNKNOWN_PRESET and preset in self.setup.foreign_presets)
        self._check(right, f"{kind} refused: {err}")

    def _check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.tally.problems.append(f"performer {self.index}: {problem}")
