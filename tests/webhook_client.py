"""Signing webhooks as a sender would (Standard Webhooks, via the ``standardwebhooks`` package)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def signed(secret: str, body: bytes, *, offset: int = 0, msg_id: str = "msg_1") -> dict[str, str]:
    """Standard Webhooks headers signed ``offset`` seconds away from now (whole seconds,
    rounded towards now, so that ±299 stays within 300 s however long the check takes)."""
    now = time.time()
    at = datetime.fromtimestamp(math.ceil(now) + offset if offset < 0 else int(now) + offset, UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
    }
