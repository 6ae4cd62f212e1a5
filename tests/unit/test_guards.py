"""Who the client is behind a proxy, and the allowlist (offline; the rate limit needs Redis)."""

from __future__ import annotations

import ipaddress

import pytest

from app.intake.guards import Guards
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
