"""Bind policy, CURVE keys over real loopback sockets, clip root, and `continuo keys`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from continuo.server.cli import main
from continuo.server.errors import ConfigError
from continuo.server.transport.security import (
    ClipError,
    KeyPair,
    is_loopback,
    load_keypair,
    make_keys,
    resolve_clip,
    secure_client_socket,
    secure_server_socket,
)

KEY_FILES = {"server.key", "server.key_secret", "client.key", "client.key_secret"}
REFUSED_WAIT_MS = 1000


# --- bind policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "local"), [
    ("tcp://127.0.0.1:5555", True),
    ("tcp://127.3.2.1:5555", True),
    ("tcp://[::1]:5555", True),
    ("tcp://localhost:5555", True),
    ("tcp://LocalHost:*", True),
    ("tcp://[::ffff:127.0.0.1]:5555", True),
    ("ipc:///tmp/continuo.sock", True),
    ("inproc://continuo", True),
    ("tcp://*:5555", False),
    ("tcp://0.0.0.0:5555", False),
    ("tcp://[::]:5555", False),
    ("tcp://192.168.1.20:5555", False),
    ("tcp://10.0.0.1:*", False),
    ("tcp://eth0:5555", False),
    ("tcp://lo:5555", False),
    ("tcp://studio.local:5555", False),
])
def test_is_loopback(endpoint: str, local: bool) -> None:
    assert is_loopback(endpoint) is local


@pytest.mark.parametrize("endpoint", [
    "", "127.0.0.1:5555", "tcp://127.0.0.1", "tcp://:5555", "tcp://127.0.0.1:99999",
    "tcp://127.0.0.1:port", "tcp://[::1:5555", "udp://127.0.0.1:5555", "ws://localhost:80",
])
def test_is_loopback_refuses_malformed(endpoint: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        is_loopback(endpoint)


def test_non_loopback_bind_needs_keys() -> None:
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    try:
        with pytest.raises(ConfigError, match=r"tcp://0\.0\.0\.0:5555 needs CURVE keys.*--keys"):
            secure_server_socket(socket, "tcp://0.0.0.0:5555", None, context)
        assert secure_server_socket(socket, "tcp://127.0.0.1:5555", None, context) is None
        assert not socket.curve_server
    finally:
        socket.close(linger=0)
        context.term()


# --- keys ---------------------------------------------------------------------------------------


def test_make_keys_writes_four_files_with_private_secrets(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    paths = make_keys(folder)
    assert set(paths) == KEY_FILES
    assert {p.name for p in folder.iterdir()} == KEY_FILES  # no staging folder left behind
    for name, path in paths.items():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if name.endswith("_secret") else 0o644), (name, oct(mode))
    server = load_keypair(paths["server.key_secret"])
    client = load_keypair(paths["client.key"])
    assert server.secret is not None and client.secret is None
    assert server.public == load_keypair(paths["server.key"]).public
    assert client.public == load_keypair(paths["client.key_secret"]).public
    assert server.public != client.public


def test_make_keys_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = load_keypair(make_keys(tmp_path)["server.key_secret"])
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        make_keys(tmp_path)
    assert load_keypair(tmp_path / "server.key_secret") == first
    second = load_keypair(make_keys(tmp_path, force=True)["server.key_secret"])
    assert second != first


def test_load_keypair_names_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothing\.key.*not found"):
        load_keypair(tmp_path / "nothing.key")
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_text("this is not a certificate\n")
    with pytest.raises(ConfigError, match=r"corrupt\.key"):
        load_keypair(corrupt)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(ConfigError, match=r"short\.key.*40"):
        load_keypair(short)
    assert isinstance(load_keypair(make_keys(tmp_path / "k")["client.key"]), KeyPair)


# --- CURVE over tcp://127.0.0.1 -----------------------------------------------------------------


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _curve_router(context: zmq.Context, keys_dir: Path) -> tuple[zmq.Socket, str, object]:
    router = context.socket(zmq.ROUTER)
    authenticator = secure_server_socket(router, "tcp://127.0.0.1:5555", keys_dir, context)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, f"tcp://127.0.0.1:{port}", authenticator


def _dealer(context: zmq.Context, endpoint: str, keys_dir: Path | None) -> zmq.Socket:
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    if keys_dir is not None:
        secure_client_socket(dealer, keys_dir)
    dealer.connect(endpoint)
    return dealer


def _served(router: zmq.Socket) -> bytes | None:
    """Echo one message from the router back to its sender; its body, or None after 1 s."""
    if not router.poll(REFUSED_WAIT_MS):
        return None
    identity, body = router.recv_multipart()
    router.send_multipart([identity, b"echo " + body])
    return body


def test_curve_client_with_authorized_key_is_served(tmp_path: Path, context: zmq.Context) -> None:
    make_keys(tmp_path)
    router, endpoint, authenticator = _curve_router(context, tmp_path)
    try:
        assert router.curve_server
        dealer = _dealer(context, endpoint, tmp_path)
        dealer.send(b"hello")
        assert _served(router) == b"hello"
        assert dealer.poll(REFUSED_WAIT_MS)
        assert dealer.recv() == b"echo hello"
    finally:
        authenticator.stop()


def test_unauthorized_and_plain_clients_get_nothing(tmp_path: Path, context: zmq.Context) -> None:
    server_dir, stranger_dir = tmp_path / "server", tmp_path / "stranger"
    make_keys(server_dir)
    make_keys(stranger_dir)
    # The stranger knows the server's public key but has its own, unauthorised client key.
    (stranger_dir / "server.key").write_bytes((server_dir / "server.key").read_bytes())
    router, endpoint, authenticator = _curve_router(context, server_dir)
    try:
        stranger = _dealer(context, endpoint, stranger_dir)
        plain = _dealer(context, endpoint, None)
        stranger.send(b"let me in")
        plain.send(b"let me in too")
        assert _served(router) is None
        # The authorised client still gets through afterwards.
        friend = _dealer(context, endpoint, server_dir)
        friend.send(b"friend")
        assert _served(router) == b"friend"
        assert friend.poll(REFUSED_WAIT_MS) and friend.recv() == b"echo friend"
        assert not stranger.poll(0) and not plain.poll(0)
    finally:
        authenticator.stop()


def test_authorized_folder_replaces_client_key(tmp_path: Path, context: zmq.Context) -> None:
    server_dir, second_dir = tmp_path / "server", tmp_path / "second"
    make_keys(server_dir)
    make_keys(second_dir)
    (second_dir / "server.key").write_bytes((server_dir / "server.key").read_bytes())
    (server_dir / "authorized").mkdir()
    (server_dir / "authorized" / "second.key").write_bytes((second_dir / "client.key")
                                                           .read_bytes())
    router, endpoint, authenticator = _curve_router(context, server_dir)
    try:
        first = _dealer(context, endpoint, server_dir)  # its client.key is not in authorized/
        first.send(b"first")
        assert _served(router) is None
        second = _dealer(context, endpoint, second_dir)
        second.send(b"second")
        assert _served(router) == b"second"
    finally:
        authenticator.stop()


def test_server_keys_must_exist(tmp_path: Path, context: zmq.Context) -> None:
    socket = context.socket(zmq.ROUTER)
    with pytest.raises(ConfigError, match=r"server\.key_secret.*not found"):
        secure_server_socket(socket, "tcp://0.0.0.0:5555", tmp_path, context)
    make_keys(tmp_path)
    (tmp_path / "authorized").mkdir()
    with pytest.raises(ConfigError, match=r"authorized.*no client public keys"):
        secure_server_socket(socket, "tcp://0.0.0.0:5555", tmp_path, context)
    assert not socket.curve_server


# --- clip root ----------------------------------------------------------------------------------


@pytest.fixture
def clip_root(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    (root / "sets").mkdir(parents=True)
    (root / "sets" / "intro.wav").write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    return root


def test_resolve_clip_accepts_files_inside_root(clip_root: Path) -> None:
    inside = (clip_root / "sets" / "intro.wav").resolve()
    assert resolve_clip(clip_root, "sets/intro.wav") == inside
    assert resolve_clip(clip_root, str(inside)) == inside
    assert resolve_clip(clip_root, "sets/../sets/intro.wav") == inside
    os.symlink(inside, clip_root / "link.wav")  # a link that stays inside is fine
    assert resolve_clip(clip_root, "link.wav") == inside


@pytest.mark.parametrize(("clip", "message"), [
    ("../secret.wav", "outside the clip root"),
    ("sets/../../secret.wav", "outside the clip root"),
    ("ABSOLUTE_OUTSIDE", "outside the clip root"),
    ("escape.wav", "outside the clip root"),
    ("sets/missing.wav", "not found"),
    ("../missing.wav", "outside the clip root"),
    ("sets", "is a folder"),
    (".", "is a folder"),
    ("", "empty"),
    ("sets/intro.wav\0.txt", "NUL"),
])
def test_resolve_clip_refuses(clip_root: Path, clip: str, message: str) -> None:
    outside = clip_root.parent / "secret.wav"
    os.symlink(outside, clip_root / "escape.wav")
    clip = str(outside) if clip == "ABSOLUTE_OUTSIDE" else clip
    with pytest.raises(ClipError, match=message) as info:
        resolve_clip(clip_root, clip)
    assert str(clip_root.resolve()) in str(info.value)


def test_resolve_clip_needs_a_root_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="clip root"):
        resolve_clip(tmp_path / "absent", "a.wav")


# --- continuo keys ------------------------------------------------------------------------------


def test_cli_keys_writes_files_and_refuses_a_second_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    assert main(["keys", str(folder)]) == 0
    out = capsys.readouterr().out
    assert {p.name for p in folder.iterdir()} == KEY_FILES
    assert f"--keys {folder}" in out and "client.key_secret" in out
    before = (folder / "server.key_secret").read_bytes()
    assert main(["keys", str(folder)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (folder / "server.key_secret").read_bytes() == before
    assert main(["keys", str(folder), "--force"]) == 0
    assert (folder / "server.key_secret").read_bytes() != before
