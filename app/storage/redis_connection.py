"""The Redis client shared by web views and agents, as a service with a visible start and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from mode import Service
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app import tls
from app.settings import Settings

Item = TypeVar("Item")
Result = TypeVar("Result")

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


class TickBatch(Generic[Item, Result]):
    """Calls made within one event-loop tick, sent to Redis together.

    Each ``await batch(item)`` queues its item; the first of a tick schedules the
    send (``loop.call_soon``), so the items of every coroutine that got there in
    that tick go in one ``send(items)`` (at most ``limit`` per send), which returns
    one result per item, in order. When ``send`` raises, every waiter of that send
    gets the error. redis-py 8.1 costs ~100 us of CPU per command whatever it does:
    a Lua script taking the items of a tick costs a few us each (bench/README.md,
    "Claims per tick").
    """

    def __init__(
        self, send: Callable[[list[Item]], Awaitable[Sequence[Result]]], limit: int
    ) -> None:
        self._send = send
        self._limit = limit
        self._queued: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sending: set[asyncio.Future[None]] = set()

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queued.append((item, future))
        if len(self._queued) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), self._limit):
            task = asyncio.ensure_future(self._deliver(queued[start : start + self._limit]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as exc:  # the waiters' to handle: each gets it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (the service stopping): none waits for ever
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its request went away meanwhile
                future.set_result(result)
