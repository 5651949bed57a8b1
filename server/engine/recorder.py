"""Every job is recorded as it streams: a WAV that grows chunk by chunk, and a JSON sidecar.

The WAV (mono float32 at the model's rate) has its header rewritten with every chunk and is
flushed, so it holds every chunk sent so far, readable by any player, whatever happens to the
client (or, up to the last chunk, to the server). The sidecar is rewritten atomically at the
start, on every parameter change and at the end: prompt (path or "pcm", sha256, seconds),
model folder and the sha256 of each part's config, preset, seed, tempo, meter, chunk beats, the
parameters over time (`params_log`: from which chunk each set applied), and at the end why the
job ended and how much it made.

A disk problem never stops the music: a recording that cannot be created (a read-only or
missing folder) or written (a disk that fills on a later chunk) stops, `error` says why, naming
the WAV and the OS error, and the job plays on. A WAV cut by a failed write is truncated back to
the whole chunks before it (header rewritten), and the sidecar says so (`recording_cut`: the
error, the chunks and samples the WAV holds). A sidecar that cannot be written is logged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)

# libsndfile's SFC_SET_UPDATE_HEADER_AUTO (rewrite the header's sizes on every write) and
# SFC_FILE_TRUNCATE (cut the file to a frame count). soundfile has no public call for them;
# `_snd` and `_ffi` are its cffi handles to libsndfile.
_SFC_SET_UPDATE_HEADER_AUTO = 0x1061
_SFC_FILE_TRUNCATE = 0x1080


def pcm_sha256(pcm: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pcm, dtype="<f4").tobytes()).hexdigest()


class Recording:
    """One job's WAV + sidecar in `folder`, named `<job>.wav` / `<job>.json`. No method raises
    on a disk problem (see the module doc): `error` is None while the WAV holds every chunk."""

    def __init__(self, folder: Path, job: str, sample_rate: int, meta: dict[str, Any]) -> None:
        self.wav = folder / f"{job}.wav"
        self.sidecar = folder / f"{job}.json"
        self.meta: dict[str, Any] = {**meta, "job": job, "sample_rate": sample_rate,
                                     "wav": str(self.wav), "started": _now(), "samples": 0,
                                     "chunks": 0, "params_log": []}
        self.error: str | None = None  # why the WAV stopped (None: it holds every chunk)
        self.created = False  # whether the WAV was created
        self._file: sf.SoundFile | None = None
        self._closed = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
            open(self.wav, "wb").close()  # an OSError here names the path and the OS error
            self._file = sf.SoundFile(self.wav, "w", samplerate=sample_rate, channels=1,
                                      subtype="FLOAT", format="WAV")
            sf._snd.sf_command(self._file._file, _SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL,
                               sf._snd.SF_TRUE)
            self.created = True
        except (OSError, sf.SoundFileError) as err:
            self._stop(f"cannot record to {self.wav}: {_reason(err)}")
            _remove(self.wav)  # an empty file, if any: not a WAV
        self._write_sidecar()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def wav_path(self) -> str | None:
        """The WAV's path, None when it could not be created."""
        return str(self.wav) if self.created else None

    @property
    def sidecar_path(self) -> str | None:
        """The sidecar's path, None when none could be written."""
        return str(self.sidecar) if self.sidecar.is_file() else None

    def log_params(self, from_chunk: int, params: dict[str, float], preset: str) -> None:
        """Parameters (and preset) in effect from chunk `from_chunk` on."""
        self.meta["params_log"].append({"from_chunk": from_chunk, "params": dict(params),
                                        "preset": preset, "at": _now()})
        self._write_sidecar()

    def write(self, pcm: np.ndarray) -> str | None:
        """Append one chunk [T] (the header then counts it) and flush. → None, or (once) the
        error that cut the recording at this chunk; after that, writes do nothing."""
        if self._file is None or self._file.closed:
            return None
        try:
            self._file.write(np.asarray(pcm, dtype=np.float32))
            self._file.flush()
        except (OSError, sf.SoundFileError) as err:
            return self._cut(err)
        self.meta["samples"] += len(pcm)
        self.meta["chunks"] += 1
        return None

    def close(self, reason: str, **summary: Any) -> None:
        """Close the WAV and write the final sidecar; closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        self._close_file()
        self.meta.update(summary, reason=reason, ended=_now())
        self._write_sidecar()

    def _cut(self, err: Exception) -> str:
        """A write failed: cut the WAV back to the chunks written before, close it."""
        reason = _reason(err, self._file)
        frames = sf._ffi.new("sf_count_t *", self.meta["samples"])
        sf._snd.sf_command(self._file._file, _SFC_FILE_TRUNCATE, frames,
                           sf._ffi.sizeof("sf_count_t"))
        self._close_file()
        seconds = self.meta["samples"] / self.meta["sample_rate"]
        self._stop(f"recording {self.wav} cut after {self.meta['chunks']} chunks "
                   f"({seconds:.2f} s): {reason}")
        self._write_sidecar()
        return self.error

    def _stop(self, error: str) -> None:
        log.warning("%s; the job plays on without recording", error)
        self.error = error
        self.meta["recording_cut"] = {"error": error, "chunks": self.meta["chunks"],
                                      "samples": self.meta["samples"]}

    def _close_file(self) -> None:
        if self._file is None or self._file.closed:
            return
        try:
            self._file.close()
        except (OSError, sf.SoundFileError) as err:
            log.warning("closing %s: %s", self.wav, _reason(err))

    def _write_sidecar(self) -> None:
        tmp = self.sidecar.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(self.meta, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, self.sidecar)
        except OSError as err:
            log.warning("cannot write the sidecar %s: %s", self.sidecar, _reason(err))
            _remove(tmp)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only disk: nothing was written there either
        path.unlink(missing_ok=True)


def _reason(err: Exception, file: sf.SoundFile | None = None) -> str:
    """The OS error behind `err`: "Read-only file system (EROFS)", or for a failed write
    libsndfile's words for it ("No space left on device")."""
    if isinstance(err, OSError) and err.errno is not None:
        return f"{err.strerror} ({errno.errorcode.get(err.errno, err.errno)})"
    if file is not None and not file.closed:
        text = sf._ffi.string(sf._snd.sf_strerror(file._file)).decode(errors="replace")
        return text.removeprefix("System error : ").rstrip(".")
    return str(err)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
