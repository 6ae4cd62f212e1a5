"""Faust's aiokafka transport with one change: never ack a message the stream skipped.

While flow is suspended (recovery after start or a rebalance) or when a message
was fetched in an older consumer generation, Faust's stream skips the message
and *acks* it (faust-streaming 0.15.3, ``Stream._py_aiter`` and its Cython
twin). The ack lets the committed offset move past a record no agent has
processed; after the consumer seeks to that committed offset, the record is
gone. We saw it as lost payments after a SIGKILL and restart mid-load.

Refusing those acks keeps the offset where it was: the recovery that follows
seeks back to it and the record is fetched and processed again (at-least-once;
the record agent's dedup absorbs any repeat).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver


class Consumer(driver.Consumer):
    def ack(self, message: Any) -> bool:
        app = self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            return False
        return bool(super().ack(message))


class Transport(driver.Transport):
    Consumer = Consumer
