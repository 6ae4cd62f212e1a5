"""The cheap checks before a webhook's body is read or its signature computed.

- the client address: the TCP peer, or — only when the peer is a trusted proxy —
  the right-most address of ``X-Forwarded-For`` that is not itself a trusted
  proxy (the left part of that header is whatever the client wrote);
- the IP allowlist (403);
- a rate limit per client address in Redis, shared by every worker (429 with
  Retry-After); without Redis, requests pass and a warning says so.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time

from redis.exceptions import RedisError

from app.instruments import REDIS_UNAVAILABLE
from app.settings import IPNetwork, Settings
from app.storage.redis_connection import RedisConnection

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None


def _within(address: IPAddress, networks: list[IPNetwork]) -> bool:
    return any(address in network for network in networks)


class Guards:
    """The allowlist and the rate limit of webhook requests; one per worker."""

    def __init__(self, settings: Settings, redis: RedisConnection) -> None:
        self.allowlist = settings.webhook_ip_allowlist
        self.proxies = settings.webhook_trusted_proxies
        self.rate = settings.webhook_rate_limit_per_source
        self.redis = redis
        # A fixed window of at least a second; a rate below 1/s gets one request per window.
        self.window = max(1.0, 1.0 / self.rate) if self.rate else 0.0
        self.limit = max(1, math.floor(self.rate * self.window)) if self.rate else 0

    def client(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        """The client's address (None when the peer is not an IP address, e.g. a Unix socket)."""
        address = _address(peer)
        if address is None or not _within(address, self.proxies) or not forwarded_for:
            return address
        for hop in reversed(forwarded_for.split(",")):
            forwarded = _address(hop)
            if forwarded is None:
                return address  # junk in the chain: trust no further than the last proxy
            if not _within(forwarded, self.proxies):
                return forwarded
            address = forwarded
        return address

    def allowed(self, client: IPAddress | None) -> bool:
        """True when the allowlist is empty or holds ``client``."""
        if not self.allowlist:
            return True
        return client is not None and _within(client, self.allowlist)

    async def retry_after(self, client: IPAddress | None) -> int | None:
        """Seconds ``client`` must wait when it is over its rate, else None."""
        if not self.rate:
            return None
        window = math.floor(time.time() / self.window)
        key = f"payments:rate:{client}:{window}"
        try:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, math.ceil(self.window) + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("rate_limit").inc()
            log.warning("rate limit not applied to %s: Redis unavailable (%r)", client, exc)
            return None
        if count <= self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window - time.time()))
