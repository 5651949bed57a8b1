"""bridge/patches/continuo.maxpat: valid Max patcher JSON, only Max's own objects, every cord
between real inlets and outlets, and a control for every OSC message of `continuo.bridge.osc`.

Max is not installed here, so the patch is checked as a file: `problems(patch)` lists what is
wrong; the shipped patch has none, and broken copies of it (an unknown object, a cord to a
missing inlet, a missing OSC message) each have the one problem made.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from continuo.bridge.osc import PREFIX, SIGNATURES
from continuo.server.transport.protocol import PARAM_NAMES

PATCHES = Path(__file__).resolve().parents[1] / "bridge" / "patches"
PATCH = PATCHES / "continuo.maxpat"
OBJECTS = PATCHES / "max_objects.txt"
SEND_PORT, REPLY_PORT = 9000, 9001  # continuo-bridge --osc-port 9000 --reply 127.0.0.1:9001
REPLIES = ("chunk", "done", "status", "error", "playing", "played", "learned")


def max_objects() -> set[str]:
    lines = OBJECTS.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def load_patch() -> dict[str, Any]:
    return json.loads(PATCH.read_text(encoding="utf-8"))


def boxes_of(patch: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["box"] for entry in patch["patcher"]["boxes"]]


def words(box: dict[str, Any]) -> list[str]:
    return str(box.get("text", "")).split()


def structure_problems(patch: dict[str, Any]) -> list[str]:
    """The patcher skeleton Max expects, and each box's id, class and rectangle."""
    patcher = patch.get("patcher")
    if not isinstance(patcher, dict):
        return ["no top-level 'patcher' object"]
    found = [f"patcher has no {key!r}" for key in ("fileversion", "appversion", "rect", "boxes",
                                                   "lines") if key not in patcher]
    if found:
        return found
    ids = [entry.get("box", {}).get("id") for entry in patcher["boxes"]]
    if len(ids) != len(set(ids)):
        found.append("duplicate box ids")
    for entry in patcher["boxes"]:
        box = entry.get("box", {})
        for key in ("id", "maxclass", "patching_rect", "numinlets", "numoutlets"):
            if key not in box:
                found.append(f"box {box.get('id')} has no {key!r}")
        rect = box.get("patching_rect", [])
        if len(rect) != 4 or not all(isinstance(v, int | float) for v in rect):
            found.append(f"box {box.get('id')}: patching_rect {rect} is not 4 numbers")
    return found


def object_problems(patch: dict[str, Any], allowed: set[str]) -> list[str]:
    """Every box class, and every object box's class (first word of its text), is Max's own."""
    found = []
    for box in boxes_of(patch):
        if box["maxclass"] not in allowed:
            found.append(f"box {box['id']}: maxclass {box['maxclass']!r} is not in the list")
        if box["maxclass"] == "newobj" and (not words(box) or words(box)[0] not in allowed):
            found.append(f"box {box['id']}: object {box.get('text')!r} is not in the list")
    return found


def cord_problems(patch: dict[str, Any]) -> list[str]:
    """Every patch cord joins existing boxes, from a real outlet to a real inlet."""
    found = []
    by_id = {box["id"]: box for box in boxes_of(patch)}
    for entry in patch["patcher"]["lines"]:
        (src, outlet), (dst, inlet) = (entry["patchline"]["source"],
                                       entry["patchline"]["destination"])
        if src not in by_id or dst not in by_id:
            found.append(f"cord {src}→{dst} names a missing box")
        elif not 0 <= outlet < by_id[src]["numoutlets"]:
            found.append(f"cord from {src} outlet {outlet}: it has {by_id[src]['numoutlets']}")
        elif not 0 <= inlet < by_id[dst]["numinlets"]:
            found.append(f"cord to {dst} inlet {inlet}: it has {by_id[dst]['numinlets']}")
    return found


def controls(patch: dict[str, Any], sends: list[str]) -> list[tuple[list[str], bool]]:
    """What each box wired to udpsend sends, and whether its argument count is known: a message
    box its own words; [prepend /continuo/... ] its words then whatever reaches it (unknown)."""
    wired = {entry["patchline"]["source"][0] for entry in patch["patcher"]["lines"]
             if entry["patchline"]["destination"][0] in sends}
    found = []
    for box in boxes_of(patch):
        if box["id"] in wired and box["maxclass"] == "message" and words(box):
            found.append((words(box), True))
        elif box["id"] in wired and box["maxclass"] == "newobj" and words(box)[:1] == ["prepend"]:
            found.append((words(box)[1:], False))
    return [(text, known) for text, known in found if text]


def osc_problems(patch: dict[str, Any]) -> list[str]:
    """udpsend to the bridge, udpreceive for its replies, a route for each reply, and a control
    wired to udpsend for every OSC address (with a fitting argument count), and for param and
    learn one per parameter."""
    boxes = boxes_of(patch)
    sends = [b["id"] for b in boxes if words(b) == ["udpsend", "127.0.0.1", str(SEND_PORT)]]
    found = [] if len(sends) == 1 else [f"want one [udpsend 127.0.0.1 {SEND_PORT}]"]
    receives = [b for b in boxes if words(b)[:2] == ["udpreceive", str(REPLY_PORT)]]
    if len(receives) != 1:
        found.append(f"want one [udpreceive {REPLY_PORT}]")
    routed = {w for b in boxes if words(b)[:1] == ["route"] for w in words(b)[1:]}
    found += [f"no route for {PREFIX}{r}" for r in REPLIES if PREFIX + r not in routed]
    sent = controls(patch, sends)
    for name, (args, optional) in SIGNATURES.items():
        if not any(m[0] == PREFIX + name and (not known or
                                               len(args) - optional <= len(m) - 1 <= len(args))
                   for m, known in sent):
            found.append(f"no message {PREFIX}{name} with {len(args) - optional}–{len(args)} "
                         "arguments wired to udpsend")
    for name in ("param", "learn"):
        params = {m[1] for m, _ in sent if m[0] == PREFIX + name and len(m) > 1}
        found += [f"no {PREFIX}{name} message for {p}" for p in PARAM_NAMES if p not in params]
    return found


def problems(patch: dict[str, Any]) -> list[str]:
    found = structure_problems(patch)
    if found:
        return found
    return object_problems(patch, max_objects()) + cord_problems(patch) + osc_problems(patch)


def test_object_list_is_plain_names() -> None:
    names = max_objects()
    assert {"udpsend", "udpreceive", "route", "buffer~", "newobj", "message"} <= names
    assert all(" " not in name for name in names)


def test_the_patch_has_no_problems() -> None:
    assert problems(load_patch()) == []


def test_every_osc_address_has_a_control() -> None:
    """The Max side of it (tests/test_pd_patch.py checks continuo.pd the same way)."""
    patch = load_patch()
    sends = [b["id"] for b in boxes_of(patch) if words(b)[:1] == ["udpsend"]]
    texts = {" ".join(text) for text, _ in controls(patch, sends)}
    assert {"/continuo/generate $1 $2 $3", "/continuo/capture $1", "/continuo/capture $2 $1",
            "/continuo/learn top_k"} <= texts
    assert {f"{PREFIX}{name}" for name in SIGNATURES} == {t.split()[0] for t in texts}


def _find(patch: dict[str, Any], first_word: str) -> dict[str, Any]:
    return next(b for b in boxes_of(patch) if words(b)[:1] == [first_word])


def _unknown_object(patch: dict[str, Any]) -> None:
    _find(patch, "print")["text"] = "o.display continuo"  # an external (CNMAT odot), not Max's


def _unknown_ui(patch: dict[str, Any]) -> None:
    next(b for b in boxes_of(patch) if b["maxclass"] == "flonum")["maxclass"] = "bach.roll"


def _cord_to_missing_inlet(patch: dict[str, Any]) -> None:
    patch["patcher"]["lines"][0]["patchline"]["destination"][1] = 99


def _cord_from_missing_outlet(patch: dict[str, Any]) -> None:
    patch["patcher"]["lines"][0]["patchline"]["source"][1] = 99


def _cord_to_missing_box(patch: dict[str, Any]) -> None:
    patch["patcher"]["lines"][0]["patchline"]["destination"][0] = "obj-9999"


def _no_stop_message(patch: dict[str, Any]) -> None:
    patch["patcher"]["boxes"] = [e for e in patch["patcher"]["boxes"]
                                 if words(e["box"])[:1] != ["/continuo/stop"]]
    ids = {e["box"]["id"] for e in patch["patcher"]["boxes"]}
    patch["patcher"]["lines"] = [e for e in patch["patcher"]["lines"]
                                 if e["patchline"]["source"][0] in ids
                                 and e["patchline"]["destination"][0] in ids]


def _generate_with_too_few_args(patch: dict[str, Any]) -> None:
    _find(patch, "/continuo/generate")["text"] = "/continuo/generate $1 $2"


def _param_name_missing(patch: dict[str, Any]) -> None:
    box = next(b for b in boxes_of(patch) if words(b)[:2] == ["/continuo/param", "top_p"])
    box["text"] = "/continuo/param temperature $1"


def _no_capture_message(patch: dict[str, Any]) -> None:
    for box in boxes_of(patch):
        if words(box)[:1] == ["/continuo/capture"]:
            box["text"] = "/continuo/status"


def _capture_with_too_many_args(patch: dict[str, Any]) -> None:
    for box in boxes_of(patch):
        if words(box)[:1] == ["/continuo/capture"]:
            box["text"] = "/continuo/capture $1 $2 $3"


def _learn_name_missing(patch: dict[str, Any]) -> None:
    box = next(b for b in boxes_of(patch) if words(b) == ["/continuo/learn", "variation"])
    box["text"] = "/continuo/learn top_k"


def _wrong_send_port(patch: dict[str, Any]) -> None:
    _find(patch, "udpsend")["text"] = "udpsend 127.0.0.1 9002"


def _no_route_for_errors(patch: dict[str, Any]) -> None:
    box = next(b for b in boxes_of(patch) if "/continuo/error" in words(b)[1:])
    box["text"] = box["text"].replace(" /continuo/error", "")


def _no_route_for_learned(patch: dict[str, Any]) -> None:
    box = next(b for b in boxes_of(patch) if "/continuo/learned" in words(b)[1:])
    box["text"] = box["text"].replace(" /continuo/learned", "")


def _box_without_rect(patch: dict[str, Any]) -> None:
    del boxes_of(patch)[3]["patching_rect"]


def _not_a_patcher(patch: dict[str, Any]) -> None:
    patch["patch"] = patch.pop("patcher")


@pytest.mark.parametrize("breakage, expected", [
    (_unknown_object, "o.display"),
    (_unknown_ui, "bach.roll"),
    (_cord_to_missing_inlet, "inlet 99"),
    (_cord_from_missing_outlet, "outlet 99"),
    (_cord_to_missing_box, "missing box"),
    (_no_stop_message, "/continuo/stop"),
    (_generate_with_too_few_args, "/continuo/generate"),
    (_param_name_missing, "top_p"),
    (_no_capture_message, "/continuo/capture"),
    (_capture_with_too_many_args, "/continuo/capture"),
    (_learn_name_missing, "learn message for variation"),
    (_no_route_for_learned, "route for /continuo/learned"),
    (_wrong_send_port, "udpsend"),
    (_no_route_for_errors, "route for /continuo/error"),
    (_box_without_rect, "patching_rect"),
    (_not_a_patcher, "patcher"),
])
def test_a_broken_patch_is_caught(breakage, expected: str) -> None:
    patch = copy.deepcopy(load_patch())
    breakage(patch)
    found = problems(patch)
    assert found, f"{breakage.__name__} went unnoticed"
    assert any(expected in problem for problem in found), found


def test_a_new_osc_message_needs_a_control(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SIGNATURES, "mute", (("on",), 0))  # as if osc.py grew /continuo/mute
    assert problems(load_patch()) == [
        "no message /continuo/mute with 1–1 arguments wired to udpsend"]


def test_a_prepend_wired_to_udpsend_is_a_control() -> None:
    """[umenu] → [prepend /continuo/preset] → [udpsend] does as well as message boxes."""
    patch = load_patch()
    presets = [b for b in boxes_of(patch) if words(b)[:1] == ["/continuo/preset"]]
    for box in presets:
        box.update(maxclass="newobj", text="prepend /continuo/preset")
    assert presets and problems(patch) == []
    for box in presets:
        box["text"] = "prepend set"
    assert problems(patch) == ["no message /continuo/preset with 1–1 arguments wired to udpsend"]
