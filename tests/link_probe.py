"""Run by tests/test_link.py in a subprocess, in a network namespace of its own when the machine
allows one (`unshare -rn`: only a loopback interface, so the test neither joins nor changes the
tempo of any other Link session on the network, a musician's Live or another test run), else on
the host's network. Measures `LinkClock` and prints the figures as JSON.

    python link_probe.py clock   one clock at 100 BPM: tempo, beat rate against perf_counter
                                 over 2 s, mapping error, a tempo change's continuity
    python link_probe.py peers   two clocks: do they find each other, does a tempo set by one
                                 reach the other; if not, can this machine multicast at all
"""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import sys
import time

from continuo.bridge.link import LinkClock

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
DISCOVERY_S = 5.0


def loopback_up() -> None:
    """Bring `lo` up (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b""))


def clock() -> dict:
    link = LinkClock(100)
    bpm = link.bpm()
    t0 = time.perf_counter()
    b0 = link.beat_at(t0)
    errors = []
    while time.perf_counter() < t0 + 2.0:
        errors.append(link.mapping_error_s())
        time.sleep(0.01)
    t1 = time.perf_counter()
    b1 = link.beat_at(t1)
    before = link.refresh()
    a = time.perf_counter()
    link.set_bpm(150)
    b = time.perf_counter()
    after = link.refresh()
    mid = (a + b) / 2
    time.sleep(0.5)
    t2 = time.perf_counter()
    rate_after = (link.beat_at(t2) - after.beat_at(after.t_s)) * 60 / (t2 - after.t_s)
    report = {"bpm": bpm, "elapsed_s": t1 - t0, "beats": b1 - b0,
              "mapping_error_s": sorted(errors), "bpm_after": link.bpm(),
              "rate_after_bpm": rate_after, "jump_beats": after.beat_at(mid) -
              before.beat_at(mid), "change_window_s": b - a, "peers": link.peers()}
    link.close()
    return report


def multicast_works() -> str | None:
    """None if a multicast datagram sent on this machine comes back, else why not."""
    group = "239.255.77.77"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("", 0))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
            rx.settimeout(1.0)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"continuo", (group, rx.getsockname()[1]))
            rx.recv(64)
    except OSError as err:
        return f"a multicast datagram to {group} did not come back ({err})"
    return None


def peers() -> dict:
    a, b = LinkClock(100), LinkClock(130)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < DISCOVERY_S and not (a.peers() and b.peers()):
        time.sleep(0.02)
    found_s = time.perf_counter() - t0
    report = {"found_s": found_s, "peers": [a.peers(), b.peers()]}
    if a.peers() and b.peers():
        a.set_bpm(111.5)
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < DISCOVERY_S and abs(b.bpm() - 111.5) > 0.01:
            time.sleep(0.005)
        report.update(seen_bpm=b.bpm(), seen_after_s=time.perf_counter() - t1,
                      beat_difference=b.beat_at(now := time.perf_counter()) - a.beat_at(now))
    else:
        report["multicast"] = multicast_works()
    a.close()
    b.close()
    return report


if __name__ == "__main__":
    if "--isolated" in sys.argv:
        loopback_up()
    print(json.dumps({"clock": clock, "peers": peers}[sys.argv[1]]()))
