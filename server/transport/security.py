"""Who may talk to the server and which files it may read: bind policy, CURVE keys, clip root.

The server binds loopback by default. Any other address is reachable from the network, so it
must use ZeroMQ CURVE (encryption plus authentication): `continuo keys DIR` writes a key pair
for the server and one for a client, and `continuo serve --bind tcp://0.0.0.0:5555 --keys DIR`
accepts only the client public keys in `DIR/authorized/` (or `DIR/client.key` when there is no
such folder). Clip paths in `generate` requests must lie inside the configured clip root.

pyzmq and the standard library only (no torch): the bridge imports `secure_client_socket`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from continuo.server.errors import ConfigError, ContinuoError

log = logging.getLogger(__name__)

SERVER_NAME = "server"
CLIENT_NAME = "client"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
AUTHORIZED_DIR = "authorized"
LOCAL_TRANSPORTS = ("ipc", "inproc")
_ENDPOINT = re.compile(r"(?P<transport>[a-z0-9]+)://(?P<address>.+)")
_TCP_ADDRESS = re.compile(r"(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^\[\]]+)):(?P<port>\d+|\*)")


class ClipError(ContinuoError):
    """A clip path outside the clip root, missing, or not a regular file."""


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, z85-encoded (40 bytes each); `secret` is None for a public-only file."""

    public: bytes
    secret: bytes | None

    def __post_init__(self) -> None:
        for name, key in (("public", self.public), ("secret", self.secret)):
            if key is not None and len(key) != 40:
                raise ConfigError(f"{name} CURVE key must be 40 z85 characters, got {len(key)}")


# --- bind policy --------------------------------------------------------------------------------


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint can only be reached from this machine.

    Local: tcp://127.x.x.x:PORT, tcp://[::1]:PORT, tcp://localhost:PORT, ipc://..., inproc://...
    Not local: tcp://*:PORT, tcp://0.0.0.0:PORT, any other address or interface name (even
    `lo`: only addresses are trusted). PORT is a number or `*`. Any other transport or a
    malformed endpoint raises ConfigError naming it.
    """
    match = _ENDPOINT.fullmatch(endpoint.strip())
    if match is None:
        raise ConfigError(f"endpoint {endpoint!r} is not TRANSPORT://ADDRESS "
                          "(e.g. tcp://127.0.0.1:5555)")
    transport, address = match["transport"], match["address"]
    if transport in LOCAL_TRANSPORTS:
        return True
    if transport != "tcp":
        raise ConfigError(f"endpoint {endpoint!r}: the server binds tcp://, ipc:// or inproc://, "
                          f"not {transport}://")
    tcp = _TCP_ADDRESS.fullmatch(address)
    if tcp is None or (tcp["port"] != "*" and not 0 <= int(tcp["port"]) <= 65535):
        raise ConfigError(f"endpoint {endpoint!r} is not tcp://HOST:PORT "
                          "(e.g. tcp://127.0.0.1:5555, tcp://[::1]:5555)")
    host = tcp["ipv6"] or tcp["host"]
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # `*`, an interface name or a host name: not provably local
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# --- keys ---------------------------------------------------------------------------------------


def key_paths(folder: Path) -> dict[str, Path]:
    """The four key files of a keys folder, by name (`server.key`, `server.key_secret`, ...)."""
    names = [n + s for n in (SERVER_NAME, CLIENT_NAME) for s in (PUBLIC_SUFFIX, SECRET_SUFFIX)]
    return {name: Path(folder) / name for name in names}


def make_keys(folder: Path, force: bool = False) -> dict[str, Path]:
    """Write a server and a client CURVE key pair into folder (created 0700 if missing).

    Returns {file name: path}. Secret files are 0600 from the moment they appear: the keys are
    written into a private temporary folder inside `folder` and then moved into place. Refuses
    (ConfigError) to overwrite existing key files unless force is true.
    """
    folder = Path(folder)
    paths = key_paths(folder)
    existing = [str(p) for p in paths.values() if p.exists() or p.is_symlink()]
    if existing and not force:
        raise ConfigError(f"{folder}: key files exist ({', '.join(existing)}); "
                          "refusing to overwrite them without force (`continuo keys --force`)")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder, cannot write keys into it")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=folder))  # mode 0700
    try:
        for name in (SERVER_NAME, CLIENT_NAME):
            zmq.auth.create_certificates(staging, name)
        for file_name, path in paths.items():
            mode = 0o600 if file_name.endswith(SECRET_SUFFIX) else 0o644
            os.chmod(staging / file_name, mode)
            os.replace(staging / file_name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.debug("wrote CURVE keys to %s", folder)
    return paths


def load_keypair(path: Path) -> KeyPair:
    """Read a ZeroMQ certificate file (`*.key` or `*.key_secret`); ConfigError naming the file
    when it is missing, unreadable or holds no valid key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: CURVE key file not found (make keys with `continuo keys DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a ZeroMQ certificate file ({err})") from err
    try:
        return KeyPair(public, secret)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _secret_keypair(path: Path) -> KeyPair:
    pair = load_keypair(path)
    if pair.secret is None:
        raise ConfigError(f"{path}: holds no secret key (expected a `.key_secret` file)")
    return pair


def authorized_client_keys(keys_dir: Path) -> frozenset[bytes]:
    """The client public keys the server accepts: every `*.key` in `keys_dir/authorized/`, or
    `keys_dir/client.key` when there is no such folder. ConfigError when there are none."""
    keys_dir = Path(keys_dir)
    authorized = keys_dir / AUTHORIZED_DIR
    if authorized.is_dir():
        files = sorted(authorized.glob("*" + PUBLIC_SUFFIX))
        if not files:
            raise ConfigError(f"{authorized}: no client public keys (*{PUBLIC_SUFFIX}) in it; "
                              "copy each client's .key file there")
    else:
        files = [keys_dir / (CLIENT_NAME + PUBLIC_SUFFIX)]
    return frozenset(load_keypair(f).public for f in files)


class _AllowList:
    """pyzmq's credentials provider: accepts the z85 client keys it was given."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed:
            log.warning("refused a CURVE client with an unknown key %s", key.decode("ascii"))
        return allowed


# --- sockets ------------------------------------------------------------------------------------


def secure_server_socket(socket: zmq.Socket, endpoint: str, keys_dir: Path | None,
                         context: zmq.Context) -> ThreadAuthenticator | None:
    """Apply the bind policy to a server socket before it binds `endpoint`.

    Loopback without keys: plain ZeroMQ, returns None. Not loopback without keys: ConfigError.
    With keys_dir (loopback or not): the socket becomes a CURVE server with the key pair in
    `keys_dir/server.key_secret`, and a ZAP authenticator started on `context` accepts only the
    authorized client keys; it is returned and the caller stops it (`.stop()`) on shutdown.
    """
    local = is_loopback(endpoint)
    if keys_dir is None:
        if local:
            return None
        raise ConfigError(f"binding {endpoint} needs CURVE keys: run `continuo keys DIR` "
                          "and pass --keys DIR")
    server = _secret_keypair(Path(keys_dir) / (SERVER_NAME + SECRET_SUFFIX))
    clients = authorized_client_keys(Path(keys_dir))
    authenticator = ThreadAuthenticator(context, log=log.getChild("zap"))
    authenticator.start()
    try:
        authenticator.configure_curve_callback("*", _AllowList(clients))
        socket.curve_secretkey = server.secret
        socket.curve_publickey = server.public
        socket.curve_server = True
    except BaseException:
        authenticator.stop()
        raise
    log.info("CURVE on %s: %d authorized client key(s) from %s", endpoint, len(clients),
             keys_dir)
    return authenticator


def secure_client_socket(socket: zmq.Socket, keys_dir: Path) -> None:
    """Make a client socket (before it connects) a CURVE client of the server whose public key
    is `keys_dir/server.key`, with the client key pair in `keys_dir/client.key_secret`."""
    server = load_keypair(Path(keys_dir) / (SERVER_NAME + PUBLIC_SUFFIX))
    client = _secret_keypair(Path(keys_dir) / (CLIENT_NAME + SECRET_SUFFIX))
    socket.curve_serverkey = server.public
    socket.curve_publickey = client.public
    socket.curve_secretkey = client.secret


# --- clip root ----------------------------------------------------------------------------------


def resolve_clip(root: Path, clip: str) -> Path:
    """The real path of a clip named in a request, which must be a regular file inside root.

    `clip` is absolute or relative to root; symlinks are resolved before the check, so a link
    inside root that points outside is refused. ClipError (naming clip and root) when it lies
    outside root, is missing, or is a folder or other non-regular file. ConfigError when root
    itself is not a folder. Reading the audio is the caller's job.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ConfigError(f"clip root {root} is not a folder")
    real_root = root_path.resolve()
    if not clip or "\0" in clip:
        raise ClipError(f"clip path {clip!r} (clip root {real_root}) is empty or contains a "
                        "NUL character")
    try:
        real = (real_root / clip).resolve()  # an absolute clip replaces root
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise ClipError(f"clip {clip!r} cannot be resolved under clip root {real_root}: "
                        f"{err}") from err
    if not real.is_relative_to(real_root):
        raise ClipError(f"clip {clip!r} ({real}) is outside the clip root {real_root}")
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        raise ClipError(f"clip {clip!r} not found in clip root {real_root}") from None
    except OSError as err:
        raise ClipError(f"clip {clip!r} in clip root {real_root}: {err}") from err
    if stat.S_ISDIR(mode):
        raise ClipError(f"clip {clip!r} ({real}) is a folder, not an audio file")
    if not stat.S_ISREG(mode):
        raise ClipError(f"clip {clip!r} ({real}) is not a regular file")
    return real
