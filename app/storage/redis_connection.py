"""The Redis client shared by web views and agents, as a service with a visible start and stop."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from mode import Service
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app import tls
from app.settings import Settings

#: Redis is a cache and a guard here, never the authority: fail fast, then fall back.
SOCKET_TIMEOUT_SECONDS = 1.0
#: Connections per worker; a request waits up to SOCKET_TIMEOUT_SECONDS for a free one
#: (redis-py's default pool refuses at once: 200 concurrent webhooks got MaxConnectionsError).
MAX_CONNECTIONS = 64


class RedisConnection(Service):
    """Owns a ``redis.asyncio.Redis`` client; connections open lazily on first use."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self._client: redis.Redis | None = None
        super().__init__(**kwargs)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("RedisConnection used before it was started")
        return self._client

    async def on_start(self) -> None:
        if self._client is None:
            pool = redis.BlockingConnectionPool(
                host=self.settings.redis_host,
                port=self.settings.redis_port,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                retry_on_timeout=False,
                health_check_interval=30,
                max_connections=MAX_CONNECTIONS,
                timeout=SOCKET_TIMEOUT_SECONDS,
                # After a Redis restart every pooled connection is dead: a command that
                # finds one reconnects once instead of failing (health said "redis: error"
                # long after Redis was back, one stale connection at a time).
                retry=Retry(NoBackoff(), retries=1),
                retry_on_error=[RedisConnectionError],
                **tls.redis_options(self.settings),
            )
            self._client = redis.Redis(connection_pool=pool)

    async def on_stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose(close_connection_pool=True)  # the pool is ours: its sockets too
