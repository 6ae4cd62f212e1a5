"""POST /api/v1/payments/webhook[/{channel}]: signed payment notices into ``payment.intake``.

The order is the guard order of the issue: channel, signature (401 before the
body is even parsed), body (400/422), then the record goes to the intake topic
keyed by its reference and the answer waits for the broker's acknowledgement:
no 2xx before the record is durable (503 with Retry-After when Kafka does not
acknowledge in time).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from faust.web import Request, Response, View

from app.channels import CHANNELS, GENERIC, Channel
from app.codecs import encode_record
from app.exceptions import PublishFailed
from app.topics import INTAKE
from app.webhooks import Rejected, parse_body, record_for

if TYPE_CHECKING:
    from app.service import PaymentService

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying when Kafka is unavailable.
RETRY_AFTER_SECONDS = 5


class WebhookView(View):
    """One view for the generic body (no channel in the path) and each channel's own."""

    async def post(self, request: Request, channel: str | None = None) -> Response:
        try:
            return await self._accept(request, channel)
        except Rejected as rejected:
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if rejected.status == 503 else {}
            return self.json(rejected.body(), status=rejected.status, headers=headers)

    async def _accept(self, request: Request, channel_name: str | None) -> Response:
        app = cast("PaymentService", self.app)
        channel = _channel(channel_name)
        raw = await request.read()
        headers = request.headers
        if not app.verifier.verify(channel.name, raw, headers):
            raise Rejected(401, "unauthorized", "missing or invalid webhook signature")
        record = record_for(
            channel,
            parse_body(raw),
            webhook_id=headers["webhook-id"],
            received_at=datetime.now(UTC),
            window=app.date_window,
        )
        message = (record.reference_number.encode(), encode_record(record))
        try:
            await asyncio.wait_for(
                app.publisher.publish(INTAKE, [message]),
                timeout=app.settings.webhook_timeout_ms / 1000,
            )
        except (PublishFailed, TimeoutError) as exc:
            log.warning("webhook %s: intake publish failed: %r", headers["webhook-id"], exc)
            raise Rejected(
                503, "unavailable", "the payment could not be stored; retry later"
            ) from None
        return self.json({"status": "accepted", "payment_id": str(record.payment_id)}, status=202)


def _channel(name: str | None) -> Channel:
    if name is None:
        return GENERIC
    channel = CHANNELS.get(name)
    if channel is None:
        known = ", ".join(sorted(CHANNELS))
        raise Rejected(404, "unknown_channel", f"no channel {name!r}; channels: {known}")
    return channel


class ChannelWebhookView(WebhookView):
    """The same view under the channel path (Faust keeps one path per view class)."""


def register(app: Any) -> None:
    """Route both webhook paths."""
    app.page("/api/v1/payments/webhook")(WebhookView)
    app.page("/api/v1/payments/webhook/{channel}")(ChannelWebhookView)
