"""Signing webhooks as a sender would: the ``standardwebhooks`` package, and Svix's ``svix``."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook
from svix.webhooks import Webhook as SvixWebhook

#: Standard Webhooks' tolerance either way, in seconds.
TOLERANCE = 300


def signed(secret: str, body: bytes, *, offset: int = 0, msg_id: str = "msg_1") -> dict[str, str]:
    """Standard Webhooks headers signed ``offset`` seconds away from now.

    Timestamps are whole seconds: an offset inside the tolerance is rounded
    towards now and one outside it away from now, so that ±299 stays inside and
    ±301 outside however the second boundaries fall.
    """
    exact = time.time() + offset
    inside = abs(offset) < TOLERANCE
    stamp = math.floor(exact) if (offset > 0) == inside else math.ceil(exact)
    at = datetime.fromtimestamp(stamp, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }


def svix_signed(secret: str, body: bytes, *, msg_id: str = "msg_1") -> dict[str, str]:
    """Headers as Svix sends them: signed by the ``svix`` package, under ``svix-*`` names."""
    at = datetime.fromtimestamp(math.floor(time.time()), UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": SvixWebhook(secret).sign(msg_id, at, body.decode()),
    }
