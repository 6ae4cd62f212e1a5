"""The cheap checks before a webhook's body is read or its signature computed.

- the client address: the TCP peer, or — only when the peer is a trusted proxy —
  the right-most address of ``X-Forwarded-For`` that is not itself a trusted
  proxy (the left part of that header is whatever the client wrote). Every
  ``X-Forwarded-For`` line counts, joined in order: a proxy that appends a line
  of its own (HAProxy's ``option forwardfor``) leaves the client's line first.
  An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, a dual-stack socket's peer)
  is its IPv4 address, so IPv4 allowlists and proxy ranges match it;
- the IP allowlist (403);
- a rate limit per client address in Redis, shared by every worker (429 with
  Retry-After), per /64 for IPv6 (one host is given a /64 and picks any address
  in it), counted in one script call for the requests of one event-loop tick;
  without Redis, requests pass and a warning says so;
- a cap on the requests one process works on at once (503 with Retry-After), so
  slow senders or a flood cannot pile up tasks and buffers without bound; the
  body's read time is bounded by the view (408).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from redis.exceptions import RedisError

from app.instruments import REDIS_UNAVAILABLE
from app.settings import IPNetwork, Settings
from app.storage.redis_connection import RedisConnection, TickBatch

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Count each key (a source's window) once more; a new key expires after ARGV[1] seconds.
#: A MULTI/EXEC of INCR and EXPIRE per request cost redis-py ~100 us of CPU per command.
RATE_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return counts
"""

#: At most this many counts go in one script call.
RATES_PER_CALL = 100

#: An IPv6 client is counted by its /64: the prefix one host or site is given.
IPV6_RATE_PREFIX = 64


def address(text: str | None) -> IPAddress | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4); None when it is not one."""
    try:
        parsed = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def rate_source(client: IPAddress | None) -> str:
    """What the rate limit counts ``client`` as: its address, or its /64 for IPv6."""
    if isinstance(client, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((client, IPV6_RATE_PREFIX), strict=False))
    return str(client)


def _within(address: IPAddress, networks: list[IPNetwork]) -> bool:
    return any(address in network for network in networks)


class Guards:
    """The allowlist, the rate limit and the cap on requests in flight; one per process."""

    def __init__(self, settings: Settings, redis: RedisConnection) -> None:
        self.allowlist = settings.webhook_ip_allowlist
        self.proxies = settings.webhook_trusted_proxies
        self.rate = settings.webhook_rate_limit_per_source
        self.redis = redis
        # A fixed window of at least a second; a rate below 1/s gets one request per window.
        self.window = max(1.0, 1.0 / self.rate) if self.rate else 0.0
        self.limit = max(1, math.floor(self.rate * self.window)) if self.rate else 0
        self.max_in_flight = settings.webhook_max_concurrent_requests
        self.in_flight = 0
        #: A window's count outlives its window by a second.
        self.expiry = math.ceil(self.window) + 1
        self._counts = TickBatch(self._count_together, RATES_PER_CALL)
        self._rate_script: Any = None

    @contextlib.contextmanager
    def admitted(self) -> Iterator[bool]:
        """Whether a request may go on: fewer than WEBHOOK_MAX_CONCURRENT_REQUESTS in flight.

        An admitted request counts as in flight until the block ends.
        """
        if self.in_flight >= self.max_in_flight:
            yield False
            return
        self.in_flight += 1
        try:
            yield True
        finally:
            self.in_flight -= 1

    def client(
        self, peer: str | None, forwarded_for: str | Sequence[str] | None
    ) -> IPAddress | None:
        """The client's address (None when the peer is not an IP address, e.g. a Unix socket).

        ``forwarded_for`` is every ``X-Forwarded-For`` line of the request, in order
        (aiohttp's ``headers.getall``), or one line.
        """
        found = address(peer)
        lines = [forwarded_for] if isinstance(forwarded_for, str) else forwarded_for or []
        chain = ",".join(lines)
        if found is None or not _within(found, self.proxies) or not chain:
            return found
        for hop in reversed(chain.split(",")):
            forwarded = address(hop)
            if forwarded is None:
                return found  # junk in the chain: trust no further than the last proxy
            if not _within(forwarded, self.proxies):
                return forwarded
            found = forwarded
        return found

    def allowed(self, client: IPAddress | None) -> bool:
        """True when the allowlist is empty or holds ``client``."""
        if not self.allowlist:
            return True
        return client is not None and _within(client, self.allowlist)

    async def retry_after(self, client: IPAddress | None) -> int | None:
        """Seconds ``client`` must wait when it is over its rate, else None.

        The counts of every request that gets here within one event-loop tick go to
        Redis together, in one script call (RATE_SCRIPT).
        """
        if not self.rate:
            return None
        window = math.floor(time.time() / self.window)
        try:
            count = await self._counts(f"payments:rate:{rate_source(client)}:{window}")
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("rate_limit").inc()
            log.warning("rate limit not applied to %s: Redis unavailable (%r)", client, exc)
            return None
        if count <= self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window - time.time()))

    async def _count_together(self, keys: list[str]) -> list[int]:
        """One RATE_SCRIPT call: each key's count in its window, this request included."""
        if self._rate_script is None:
            self._rate_script = self.redis.client.register_script(RATE_SCRIPT)
        counts: list[int] = await self._rate_script(keys=keys, args=[self.expiry])
        return counts
