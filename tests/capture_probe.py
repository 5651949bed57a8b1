"""Run by tests/test_capture.py in a subprocess on a private JACK server ($JACK_DEFAULT_SERVER):
`InputCapture` records while a second JACK client (this file run with `play`, its own process,
so its own JACK client) plays silence, then a 1 kHz tone from a known frame; the tone's output
port is connected to the capture's input port with `jack_connect`. Prints, as JSON, the span
`take` returned around the onset, the player's timing log and JACK's port latencies.

The player logs, per block, its first frame and perf_counter() at its callback: the JACK cycle
that played frame f started at min_j(perf_j − frame_j / rate) + f / rate (the least-delayed
callback's view), the reference the test compares the captured onset with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np

RATE = 48_000
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5
ONSET_S = 1.5  # the player's stream time of the tone's first sample
PLAY_S = 3.0


def tone(first_frame: int, n: int, onset_frame: int) -> np.ndarray:
    """[n] the player's output from frame first_frame: silence, then the tone from onset."""
    k = np.arange(first_frame, first_frame + n) - onset_frame
    out = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * k / RATE)
    return np.where(k >= 0, out, 0.0).astype(np.float32)


def play() -> None:
    import sounddevice as sd

    onset = round(ONSET_S * RATE)
    n_blocks = round(PLAY_S * RATE) // 16
    frames, perf = np.zeros(n_blocks, np.int64), np.zeros(n_blocks)
    state = {"frame": 0, "block": 0}

    def callback(out: np.ndarray, n: int, t, status) -> None:
        now = time.perf_counter()
        frame, block = state["frame"], state["block"]
        out[:, 0] = tone(frame, n, onset)
        if block < n_blocks:
            frames[block], perf[block] = frame, now
        state["frame"], state["block"] = frame + n, block + 1

    with sd.OutputStream(samplerate=RATE, channels=1, dtype="float32", callback=callback):
        print("playing", flush=True)
        time.sleep(PLAY_S)
    count = min(state["block"], n_blocks)
    print(json.dumps({"onset_frame": onset, "frames": frames[:count].tolist(),
                      "perf_s": perf[:count].tolist()}), flush=True)


def ports() -> list[str]:
    return subprocess.run(["jack_lsp"], capture_output=True, text=True,
                          check=True).stdout.split()


def capture_latency_frames(port: str) -> int:
    text = subprocess.run(["jack_lsp", "-l", port], capture_output=True, text=True,
                          check=True).stdout
    return int(re.search(r"capture latency = \[ (\d+)", text).group(1))


def main() -> None:
    from continuo.bridge.capture import InputCapture

    capture = InputCapture(samplerate=RATE, channels=1, max_s=10)
    capture.start()
    ours = set(ports())
    player = subprocess.Popen([sys.executable, __file__, "play"], stdout=subprocess.PIPE,
                              text=True)
    assert player.stdout.readline().strip() == "playing"
    new = sorted(set(ports()) - ours)
    source = next(p for p in new if p.endswith("out_0"))
    sink = next(p for p in ours if re.match(r"PortAudio[^:]*:in_0$", p))
    subprocess.run(["jack_connect", source, sink], check=True)
    log = json.loads(player.stdout.readline())
    player.wait(30)
    time.sleep(0.2)
    # A 2 s span around the onset, its times from the player's clock model.
    onset_cycle_s = min(p - f / RATE for p, f in zip(log["perf_s"], log["frames"],
                                                     strict=True)) + log["onset_frame"] / RATE
    start_s, end_s = onset_cycle_s - 1.0, onset_cycle_s + 1.0
    span = capture.take(start_s, end_s)
    report = {"start_s": start_s, "end_s": end_s, "onset_cycle_s": onset_cycle_s,
              "span": span.tolist(), "overflows": capture.overflows,
              "capture_latency_frames": capture_latency_frames(sink),
              "source": source, "sink": sink, "player": log}
    try:
        capture.take(time.perf_counter() - 0.5, time.perf_counter() + 1.0)
    except Exception as err:
        report["future_error"] = f"{type(err).__name__}: {err}"
    capture.close()
    short = InputCapture(samplerate=RATE, channels=1, max_s=0.5)
    short.start()
    time.sleep(1.5)
    now = time.perf_counter()
    try:
        short.take(now - 1.2, now - 1.0)
    except Exception as err:
        report["past_error"] = f"{type(err).__name__}: {err}"
    short.close()
    try:
        InputCapture(device="no such input", samplerate=44_100)
    except Exception as err:
        report["device_error"] = f"{type(err).__name__}: {err}"
    print(json.dumps(report))


if __name__ == "__main__":
    play() if sys.argv[1:] == ["play"] else main()
