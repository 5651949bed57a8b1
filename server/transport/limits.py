"""Per-client rate limits of the server: requests per second and PCM upload bytes per second.

Each client (ROUTER identity) has two token buckets: one message costs one request token, and
its frames after the header (the PCM prompt) cost their length in upload tokens. Every message
counts, heartbeats and malformed ones included, and is charged before it is parsed, so a flood
costs the server no more than counting it. A message over either limit is dropped and answered
with an `error` of code `rate_limited`; other clients have buckets of their own.

    bucket: capacity `burst`, refilled at `rate_per_s`, starts full.
    take(cost): allowed when tokens >= min(cost, burst), then tokens -= cost.

A message costing more than the burst (a PCM prompt larger than one second of upload) thus
needs a full bucket and leaves it in debt; the long-run rate never exceeds `rate_per_s`.
Standard library only (no torch, no ZeroMQ).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from continuo.server.errors import ConfigError


@dataclass(frozen=True)
class RateLimits:
    """Limits per client; `continuo serve --max-requests-per-s ...` sets them."""

    requests_per_s: float = 200.0
    request_burst: int = 400
    upload_bytes_per_s: int = 8 * 1024 * 1024  # 8 MiB/s: 87 s of 24 kHz float32 mono a second

    def __post_init__(self) -> None:
        for name in ("requests_per_s", "request_burst", "upload_bytes_per_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
                    or value == float("inf"):
                raise ConfigError(f"rate limit {name} must be a positive finite number, "
                                  f"got {value!r}")
        if self.request_burst < 1:
            raise ConfigError(f"request_burst must be at least 1, got {self.request_burst}")

    def as_dict(self) -> dict[str, float | int]:
        """The limits as `hello` lists them."""
        return {"max_requests_per_s": self.requests_per_s, "request_burst": self.request_burst,
                "max_upload_bytes_per_s": self.upload_bytes_per_s}


@dataclass
class TokenBucket:
    """`burst` tokens refilled at `rate_per_s`; see the module doc for `take`."""

    rate_per_s: float
    burst: float
    now_s: float
    tokens: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now_s: float, cost: float = 1.0) -> bool:
        """Charge `cost` at monotonic time `now_s`; False (nothing charged) when over the limit."""
        elapsed_s = max(0.0, now_s - self.now_s)
        self.tokens = min(float(self.burst), self.tokens + elapsed_s * self.rate_per_s)
        self.now_s = max(self.now_s, now_s)
        if self.tokens < min(cost, self.burst):
            return False
        self.tokens -= cost
        return True


@dataclass
class _Client:
    requests: TokenBucket
    upload: TokenBucket
    dropped: int = 0


class ClientLimiter:
    """Both buckets of every client; `admit` charges one message. Not thread-safe: the server's
    I/O thread owns it."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._clients: dict[bytes, _Client] = {}
        self.dropped = 0

    def admit(self, client: bytes, frames: list[bytes], now_s: float) -> str | None:
        """Charge a message (frames without the identity); None when allowed, else why not."""
        state = self._clients.get(client)
        if state is None:
            limits = self.limits
            state = self._clients[client] = _Client(
                TokenBucket(limits.requests_per_s, limits.request_burst, now_s),
                TokenBucket(limits.upload_bytes_per_s, limits.upload_bytes_per_s, now_s))
        upload_bytes = sum(len(f) for f in frames[1:])
        if not state.requests.take(now_s):
            reason = (f"over {self.limits.requests_per_s:g} requests/s (burst "
                      f"{self.limits.request_burst})")
        elif upload_bytes and not state.upload.take(now_s, upload_bytes):
            state.requests.tokens += 1  # the request itself was not the problem
            reason = (f"PCM upload of {upload_bytes} bytes over "
                      f"{self.limits.upload_bytes_per_s} bytes/s")
        else:
            return None
        state.dropped += 1
        self.dropped += 1
        return f"{reason}: message dropped ({state.dropped} dropped from this client so far)"

    def forget(self, client: bytes) -> None:
        """A client gone: its buckets go (it starts full again if it comes back)."""
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)
