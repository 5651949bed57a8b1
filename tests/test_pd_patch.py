"""`bridge/patches/continuo.pd` in a real, headless Pure Data: every control sends the OSC the
bridge reads (and every address of `osc.SIGNATURES` has one); driven by a harness patch, its
generate reaches a real bridge and server, and the bridge's replies come back, load with
[soundfiler] and play."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from continuation_fixtures import data_root, model_dir_fixture  # noqa: F401 (fixtures)
from pythonosc.osc_packet import OscPacket
from pythonosc.udp_client import SimpleUDPClient
from server_fixtures import ServerProcess, server  # noqa: F401

from continuo.bridge import osc

pytestmark = pytest.mark.timeout(300)
PATCHES = Path(__file__).resolve().parents[1] / "bridge" / "patches"
PD = ["pd", "-nogui", "-noaudio", "-nomidi", "-stderr"]


def needs_pd() -> None:
    if shutil.which("pd") is None:
        pytest.skip("Pure Data is needed (puredata-core, installed by .ci/run)")


def udp_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def pd_problems(lines: list[str]) -> list[str]:
    """Pd's own complaints: errors, objects it couldn't create, files it couldn't read."""
    return [line for line in lines if line.startswith("error") or "couldn't" in line
            or "continuo: error" in line or "continuo-unknown" in line]


def pd_osc_addresses(patch: str) -> set[str]:
    """The addresses of the [oscformat ...] boxes wired straight to a [netsend] in a Pd patch
    without subpatches (`#X connect` counts the `#X` boxes in file order)."""
    statements = [s.split() for s in re.split(r"(?<!\\);\n", patch) if s.strip()]
    boxes = [s for s in statements if s[0] == "#X" and s[1] != "connect"]
    netsends = {i for i, box in enumerate(boxes) if box[1:2] == ["obj"] and box[4:5] == ["netsend"]}
    found = set()
    for src, dst in ((int(s[2]), int(s[4])) for s in statements if s[:2] == ["#X", "connect"]):
        if dst in netsends and boxes[src][4:5] == ["oscformat"]:
            path = boxes[src][5:]
            found.add("/" + "/".join(path[2:] if path[:1] == ["-f"] else path))
    return found


def test_every_osc_address_has_a_control() -> None:
    """An [oscformat continuo NAME] → [netsend] for every address the bridge reads (the Max
    patch: tests/test_max_patch.py); without Pd, unlike the test below, which sends each."""
    patch = (PATCHES / "continuo.pd").read_text(encoding="utf-8")
    assert pd_osc_addresses(patch) == {osc.PREFIX + name for name in osc.SIGNATURES}
    assert osc.PREFIX + "capture" not in pd_osc_addresses(
        patch.replace("oscformat -f is continuo capture", "oscformat -f is continuo captur"))


def test_every_control_sends_what_the_bridge_reads_on_the_default_ports() -> None:
    """The patch opened on its own: it sends to 9000 and listens on 9001, as documented."""
    needs_pd()
    try:
        bridge_side = udp_socket(9000)
        udp_socket(9001).close()
    except OSError:
        pytest.skip("UDP port 9000 or 9001 is busy here; the patch's defaults need them")
    controls = {  # receive name and message → the command the bridge makes of it
        "continuo-generate prompt.wav 93.5 4 piano": osc.Generate("prompt.wav", 93.5, 4, "piano"),
        "continuo-go bang": osc.Generate("prompt.wav", 120.0, 4),  # the boxes' defaults
        "continuo-stop bang": osc.Stop(),
        "continuo-param top_k 40": osc.Param("top_k", 40.0),
        "continuo-param temperature 0.75": osc.Param("temperature", 0.75),
        "continuo-preset piano": osc.Preset("piano"),
        "continuo-tempo 100": osc.Tempo(100.0),
        "continuo-loop 1": osc.Loop(True),
        "continuo-status bang": osc.Status(),
        "continuo-learn top_p": osc.Learn("top_p"),
        "continuo-learn temperature": osc.Learn("temperature"),
        "continuo-capture 2": osc.Capture(2),
        "continuo-capture 8 /tmp/take\\ one.wav": osc.Capture(8, "/tmp/take one.wav"),  # Pd escape
        "continuo-capture-go bang": osc.Capture(4),  # the capture_bars box's default
    }
    replies = {  # what the bridge sends back → what the patch prints
        ("/continuo/status", ("connected", "", 100.0, 1)): "status connected  100 1",
        ("/continuo/playing", ("job-1", 0.125, 8.0)): "playing job-1 0.125 8",
        ("/continuo/played", ("job-1", 4, 0, 1.5, 4, 0)): "played job-1 4 0 1.5 4 0",
        ("/continuo/learned", ("top_p", 21)): "learned top_p 21",
    }
    argv = [*PD, "-open", str(PATCHES / "continuo.pd")]
    for message in controls:
        argv += ["-send", message]
    pd = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        got, addresses = [], set()
        with bridge_side:
            for _ in controls:
                for m in OscPacket(bridge_side.recv(65_536)).messages:
                    got.append(osc.parse_message(m.message.address, list(m.message.params)))
                    addresses.add(m.message.address)
        assert got == list(controls.values())
        assert addresses == {osc.PREFIX + name for name in osc.SIGNATURES}  # a control for each
        reply = SimpleUDPClient("127.0.0.1", 9001)
        for address, args in replies:
            reply.send_message(address, list(args))
        reply.send_message("/other/thing", [1])
        time.sleep(1.0)
    finally:
        pd.terminate()
        lines = pd.communicate(timeout=10)[1].splitlines()
    assert [f"continuo: {text}" for text in replies.values()] == [
        line for line in lines if line.startswith("continuo: ")], lines
    assert "continuo-unknown: other thing 1" in lines, lines
    assert pd_problems(lines) == ["continuo-unknown: other thing 1"], lines


def harness(bridge_port: int, reply_port: int) -> str:
    """A patch around [continuo]: generate prompt.wav at 120 BPM for 1 bar, print every reply
    as 'got: ...', the loudest [env~] of the player's output as 'peak: ...', quit after done."""
    return "\n".join([
        "#N canvas 0 0 600 420 12;",
        f"#X obj 20 20 continuo {bridge_port} {reply_port};",  # 0
        "#X obj 20 60 loadbang;",  # 1
        "#X obj 20 90 t b b;",  # 2
        "#X msg 120 120 \\; pd dsp 1;",  # 3
        "#X obj 20 120 delay 300;",  # 4
        "#X msg 20 150 prompt.wav 120 1;",  # 5
        "#X obj 20 180 s continuo-generate;",  # 6
        "#X obj 250 60 r continuo-reply;",  # 7
        "#X obj 250 90 t a a;",  # 8
        "#X obj 350 120 print got;",  # 9
        "#X obj 250 120 route done;",  # 10
        "#X obj 250 150 delay 1500;",  # 11: let the last chunk play
        "#X obj 250 180 t b b;",  # 12
        "#X msg 250 240 \\; pd quit;",  # 13
        "#X obj 20 240 r~ continuo-out;",  # 14
        "#X obj 20 270 env~ 4096;",  # 15
        "#X obj 20 300 max;",  # 16
        "#X obj 20 330 t f f;",  # 17
        "#X obj 120 360 f;",  # 18
        "#X obj 120 390 print peak;",  # 19
        "#X obj 340 150 t b;",  # 20
        *(f"#X connect {a} {o} {b} {i};" for a, o, b, i in (
            (1, 0, 2, 0), (2, 1, 3, 0), (2, 0, 4, 0), (4, 0, 5, 0), (5, 0, 6, 0), (7, 0, 8, 0),
            (8, 1, 9, 0), (8, 0, 10, 0), (10, 0, 20, 0), (20, 0, 11, 0), (11, 0, 12, 0),
            (12, 1, 18, 0), (18, 0, 19, 0), (12, 0, 13, 0), (14, 0, 15, 0), (15, 0, 16, 0),
            (16, 0, 17, 0), (17, 1, 16, 1), (17, 0, 18, 1))),
    ]) + "\n"


def start_bridge(endpoint: str, reply_port: int, folder: Path) -> tuple[subprocess.Popen, int]:
    """`continuo-bridge --reply 127.0.0.1:REPLY`, waited for until it has reached the server."""
    with udp_socket() as probe:
        port = probe.getsockname()[1]
    log = folder / "bridge.log"
    argv = [sys.executable, "-m", "continuo.bridge.cli", "--server", endpoint,
            "--osc-port", str(port), "--reply", f"127.0.0.1:{reply_port}",
            "--out", str(folder / "chunks"), "--chunk-beats", "1", "--no-audio"]
    with log.open("wb") as sink:
        bridge = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "connected to" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or bridge.poll() is not None:
            bridge.kill()
            raise AssertionError(f"the bridge did not connect:\n{log.read_text()}")
        time.sleep(0.1)
    return bridge, port


def test_the_patch_drives_a_real_bridge_and_plays_its_chunks(
    server: ServerProcess, tmp_path: Path,  # noqa: F811
) -> None:
    needs_pd()
    with udp_socket() as probe:
        reply_port = probe.getsockname()[1]
    bridge, bridge_port = start_bridge(server.endpoint, reply_port, tmp_path)
    (tmp_path / "harness.pd").write_text(harness(bridge_port, reply_port))
    log = tmp_path / "pd.log"
    quit_by_itself = False
    try:
        with log.open("wb") as sink:
            pd = subprocess.Popen([*PD, "-path", str(PATCHES), "-open",
                                   str(tmp_path / "harness.pd")], stderr=sink)
            try:
                pd.wait(60)  # the harness quits by itself after the done reply
                quit_by_itself = True
            except subprocess.TimeoutExpired:
                pd.kill()
                pd.wait()
    finally:
        bridge.terminate()
        assert bridge.wait(10) == 0
    lines = log.read_text(errors="replace").splitlines()
    seen = "\n".join(lines)
    assert quit_by_itself, f"Pd did not finish within 60 s:\n{seen}"
    chunks = [m.groups() for line in lines
              if (m := re.fullmatch(r"got: chunk (\S+) (\d+) ([\d.]+) (\d+)", line))]
    assert [(int(bar), float(beat), int(index)) for _, bar, beat, index in chunks] == [
        (0, float(i), i) for i in range(4)], seen  # 1 bar of 4/4 in 1-beat chunks
    assert all(Path(path).is_file() for path, *_ in chunks), seen
    loaded = [int(line.split()[-1]) for line in lines if line.startswith("continuo-loaded:")]
    assert loaded == [sf.info(path).frames for path, *_ in chunks] == [12_000] * 4, seen
    done = [line for line in lines if line.startswith("got: done ")]
    assert len(done) == 1 and " finished " in done[0], seen
    assert lines.index(done[0]) > max(lines.index(f"got: chunk {' '.join(c)}") for c in chunks)
    peak_db = [float(line.split()[-1]) for line in lines if line.startswith("peak:")]
    assert len(peak_db) == 1 and peak_db[0] > 0, seen  # [env~] gives 0 for silence
    assert pd_problems(lines) == [], seen
