"""The server's per-client rate limits alone (no sockets): token buckets and the limiter."""

from __future__ import annotations

import pytest

from continuo.server.errors import ConfigError
from continuo.server.transport.limits import ClientLimiter, RateLimits, TokenBucket


def test_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=4, burst=5, now_s=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(100.125)  # half a token back
    assert bucket.take(100.25) and not bucket.take(100.25)
    assert [bucket.take(110.0) for _ in range(6)] == [True] * 5 + [False]  # full again, no more
    assert not bucket.take(50.0)  # a clock going backwards refills nothing


def test_a_cost_over_the_burst_needs_a_full_bucket_and_leaves_debt() -> None:
    bucket = TokenBucket(rate_per_s=1000, burst=1000, now_s=0.0)
    assert bucket.take(0.0, 300)
    assert not bucket.take(0.0, 5000)  # needs 1000 tokens, has 700
    assert bucket.take(0.3, 5000)  # full: allowed, 4000 in debt
    assert not bucket.take(4.2, 1)  # still 100 short
    assert bucket.take(4.4, 1)


def test_limiter_keeps_clients_apart_and_charges_pcm_bytes() -> None:
    limiter = ClientLimiter(RateLimits(requests_per_s=1, request_burst=3,
                                       upload_bytes_per_s=100))
    flood, calm = b"flood", b"calm"
    refused = [limiter.admit(flood, [b"h"], 0.0) for _ in range(5)]
    assert refused[:3] == [None] * 3
    assert "over 1 requests/s (burst 3)" in refused[3] and "2 dropped" in refused[4]
    assert limiter.admit(calm, [b"h"], 0.0) is None  # its own buckets
    assert limiter.admit(calm, [b"h", b"x" * 80], 0.0) is None
    message = limiter.admit(calm, [b"h", b"x" * 80], 0.0)
    assert "PCM upload of 80 bytes over 100 bytes/s" in message
    assert limiter.admit(calm, [b"h"], 0.0) is None  # the refused upload cost no request token
    assert limiter.dropped == 3 and len(limiter) == 2
    limiter.forget(flood)
    assert limiter.admit(flood, [b"h"], 0.0) is None and len(limiter) == 2


@pytest.mark.parametrize("fields", [{"requests_per_s": 0}, {"request_burst": 0},
                                    {"upload_bytes_per_s": -1}, {"requests_per_s": float("inf")},
                                    {"request_burst": True}])
def test_limits_must_be_positive(fields: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(fields))):
        RateLimits(**fields)


def test_hello_lists_the_limits() -> None:
    assert RateLimits().as_dict() == {"max_requests_per_s": 200.0, "request_burst": 400,
                                      "max_upload_bytes_per_s": 8 * 1024 * 1024}
