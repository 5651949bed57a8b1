"""Every job is recorded as it streams: a WAV that grows chunk by chunk, and a JSON sidecar.

The WAV (mono float32 at the model's rate) has its header rewritten with every chunk and is
flushed, so it holds every chunk sent so far, readable by any player, whatever happens to the
client (or, up to the last chunk, to the server). The sidecar is rewritten atomically at the
start, on every parameter change and at the end: prompt (path or "pcm", sha256, seconds),
model folder and the sha256 of each part's config, preset, seed, tempo, meter, chunk beats, the
parameters over time (`params_log`: from which chunk each set applied), and at the end why the
job ended and how much it made.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

# libsndfile's SFC_SET_UPDATE_HEADER_AUTO: rewrite the header's sizes on every write. soundfile
# has no public call for it; `_snd` and `_ffi` are its cffi handles to libsndfile.
_SFC_SET_UPDATE_HEADER_AUTO = 0x1061


def pcm_sha256(pcm: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pcm, dtype="<f4").tobytes()).hexdigest()


class Recording:
    """One job's WAV + sidecar in `folder`, named `<job>.wav` / `<job>.json`."""

    def __init__(self, folder: Path, job: str, sample_rate: int, meta: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.wav = folder / f"{job}.wav"
        self.sidecar = folder / f"{job}.json"
        self.meta: dict[str, Any] = {**meta, "job": job, "sample_rate": sample_rate,
                                     "wav": str(self.wav), "started": _now(), "samples": 0,
                                     "chunks": 0, "params_log": []}
        self._file = sf.SoundFile(self.wav, "w", samplerate=sample_rate, channels=1,
                                  subtype="FLOAT", format="WAV")
        sf._snd.sf_command(self._file._file, _SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL,
                           sf._snd.SF_TRUE)
        self._write_sidecar()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def log_params(self, from_chunk: int, params: dict[str, float], preset: str) -> None:
        """Parameters (and preset) in effect from chunk `from_chunk` on."""
        self.meta["params_log"].append({"from_chunk": from_chunk, "params": dict(params),
                                        "preset": preset, "at": _now()})
        self._write_sidecar()

    def write(self, pcm: np.ndarray) -> None:
        """Append one chunk [T] (the header then counts it) and flush."""
        self._file.write(np.asarray(pcm, dtype=np.float32))
        self._file.flush()
        self.meta["samples"] += len(pcm)
        self.meta["chunks"] += 1

    def close(self, reason: str, **summary: Any) -> None:
        """Close the WAV and write the final sidecar; closing twice does nothing."""
        if self._file.closed:
            return
        self._file.close()
        self.meta.update(summary, reason=reason, ended=_now())
        self._write_sidecar()

    def _write_sidecar(self) -> None:
        tmp = self.sidecar.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.sidecar)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
