"""Who the client is behind a proxy, the allowlist, and what the rate limit counts (offline)."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.intake.guards import RATE_SCRIPT, Guards, rate_source
from app.settings import Settings
from app.storage.redis_connection import RedisConnection


def guards(**settings: str) -> Guards:
    configured = Settings(**settings)  # type: ignore[arg-type]  # parsed from text, as from env
    return Guards(configured, RedisConnection(configured))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.5", None, "203.0.113.5"),  # no proxy
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),  # trusted proxy: its client
        ("10.0.0.2", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client's own words don't count
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", "198.51.100.1"),  # two trusted hops
        ("10.0.0.2", "junk, 10.0.0.3", "10.0.0.3"),  # junk: stop at the last proxy
        ("10.0.0.2", "", "10.0.0.2"),
    ],
)
def test_the_client_is_the_last_address_no_trusted_proxy_vouches_for(
    peer: str, forwarded_for: str | None, client: str
) -> None:
    found = guards(webhook_trusted_proxies="10.0.0.0/24").client(peer, forwarded_for)
    assert found == ipaddress.ip_address(client)


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        # HAProxy's option forwardfor appends a line: the client's forged line comes first.
        (["198.51.100.7", "6.6.6.6"], "6.6.6.6"),
        (["198.51.100.7, 203.0.113.9", "6.6.6.6, 10.0.0.3"], "6.6.6.6"),
        (["6.6.6.6", "junk"], "10.0.0.2"),
        ([], "10.0.0.2"),
    ],
)
def test_every_forwarded_for_line_counts(lines: list[str], client: str) -> None:
    found = guards(webhook_trusted_proxies="10.0.0.0/24").client("10.0.0.2", lines)
    assert found == ipaddress.ip_address(client)


def test_an_ipv4_mapped_peer_is_its_ipv4_address() -> None:
    trusting = guards(webhook_trusted_proxies="10.0.0.0/24")
    assert trusting.client("::ffff:10.0.0.2", ["198.51.100.1"]) == ipaddress.ip_address(
        "198.51.100.1"
    )
    assert trusting.client("::ffff:203.0.113.5", None) == ipaddress.ip_address("203.0.113.5")
    assert trusting.client("10.0.0.2", ["::ffff:10.0.0.3, ::ffff:198.51.100.1"]) == (
        ipaddress.ip_address("198.51.100.1")
    )
    allowlisted = guards(webhook_ip_allowlist="198.51.100.0/24")
    assert allowlisted.allowed(allowlisted.client("::ffff:198.51.100.77", None))
    assert not allowlisted.allowed(allowlisted.client("::ffff:203.0.113.1", None))


@pytest.mark.parametrize(
    ("client", "counted_as"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ],
)
def test_ipv6_clients_are_counted_per_64(client: str, counted_as: str) -> None:
    assert rate_source(ipaddress.ip_address(client)) == counted_as


class CountingRedis:
    """RATE_SCRIPT over a dict: each key counted once more per call; the calls' keys kept."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.calls: list[list[str]] = []
        self.client = self

    def register_script(self, script: str) -> Any:
        assert script == RATE_SCRIPT
        return self._count

    async def _count(self, keys: list[str], args: list[Any]) -> list[int]:
        assert args == [2]  # a 1 s window's count outlives it by a second
        self.calls.append(keys)
        counted = []
        for key in keys:
            self.counts[key] = self.counts.get(key, 0) + 1
            counted.append(self.counts[key])
        return counted


async def test_addresses_of_one_ipv6_64_share_one_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.intake.guards.time.time", lambda: 1_800_000_000.5)  # one window
    configured = Settings(webhook_rate_limit_per_source=2)
    limited = Guards(configured, cast(RedisConnection, CountingRedis()))
    waits = [
        await limited.retry_after(ipaddress.ip_address(f"2001:db8:1:2::{host:x}"))
        for host in range(1, 4)
    ]
    assert waits[:2] == [None, None]
    assert waits[2] is not None  # a third address of the same /64 is over the rate
    assert await limited.retry_after(ipaddress.ip_address("2001:db8:1:3::1")) is None


async def test_the_counts_of_one_tick_go_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.intake.guards.time.time", lambda: 1_800_000_000.5)  # one window
    redis = CountingRedis()
    limited = Guards(Settings(webhook_rate_limit_per_source=2), cast(RedisConnection, redis))
    noisy, quiet = ipaddress.ip_address("203.0.113.5"), ipaddress.ip_address("203.0.113.6")

    waits = await asyncio.gather(*(limited.retry_after(client) for client in [noisy] * 3 + [quiet]))

    assert len(redis.calls) == 1
    assert waits[:2] == [None, None]
    assert waits[2] == 1  # over the rate: wait for the next window
    assert waits[3] is None  # another source has its own count


async def test_redis_away_lets_requests_pass(caplog: pytest.LogCaptureFixture) -> None:
    class Away(CountingRedis):
        async def _count(self, keys: list[str], args: list[Any]) -> list[int]:
            raise RedisConnectionError("Connection refused")

    limited = Guards(Settings(webhook_rate_limit_per_source=2), cast(RedisConnection, Away()))

    waits = await asyncio.gather(
        *(limited.retry_after(ipaddress.ip_address("203.0.113.5")) for _ in range(3))
    )

    assert waits == [None] * 3
    assert sum("rate limit not applied" in r.getMessage() for r in caplog.records) == 3


def test_the_allowlist_admits_only_its_networks() -> None:
    allowlisted = guards(webhook_ip_allowlist="198.51.100.0/24, 2001:db8::/32")
    assert allowlisted.allowed(ipaddress.ip_address("198.51.100.77"))
    assert allowlisted.allowed(ipaddress.ip_address("2001:db8::1"))
    assert not allowlisted.allowed(ipaddress.ip_address("203.0.113.1"))
    assert not allowlisted.allowed(None)
    assert guards().allowed(ipaddress.ip_address("203.0.113.1"))  # empty: everyone


@pytest.mark.parametrize(("rate", "window", "limit"), [(5, 1.0, 5), (0.5, 2.0, 1), (2.5, 1.0, 2)])
def test_the_rate_becomes_a_window_and_a_limit(rate: float, window: float, limit: int) -> None:
    limited = guards(webhook_rate_limit_per_source=str(rate))
    assert (limited.window, limited.limit) == (window, limit)


def test_past_the_cap_a_request_is_not_admitted_and_a_finished_one_frees_its_slot() -> None:
    capped = guards(webhook_max_concurrent_requests="2")
    with capped.admitted() as first, capped.admitted() as second:
        with capped.admitted() as third:
            assert (first, second, third) == (True, True, False)
        assert capped.in_flight == 2  # a refused request held nothing
    assert capped.in_flight == 0
    with capped.admitted() as again:
        assert again
