"""Standard Webhooks signatures, checked with the ``standardwebhooks`` package.

A request is authentic when its ``webhook-signature`` holds an HMAC-SHA256 of
``{webhook-id}.{webhook-timestamp}.{raw body}`` under one of the secrets of its
channel (``WEBHOOK_SECRET_<CHANNEL>``, else ``WEBHOOK_SECRET``; several secrets
during a rotation) and its timestamp is within five minutes of now, either way.
Why a request failed stays in the log: the sender gets a bare 401.

Svix, the largest Standard Webhooks sender, signs the same way but names the
headers ``svix-id``, ``svix-timestamp`` and ``svix-signature``. Either family is
accepted; a request carrying any ``webhook-*`` header is read from that family
alone, so a stray ``svix-*`` header never decides it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.settings import Settings

log = logging.getLogger(__name__)

#: The headers a signed request must carry.
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: Svix's names for the same headers, in the same order.
SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


def signature_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three signature headers under their ``webhook-*`` names ("" when absent).

    The ``webhook-*`` family when the request carries any of it, else the ``svix-*`` one.
    """
    ours = any(name in headers for name in SIGNATURE_HEADERS)
    family = SIGNATURE_HEADERS if ours else SVIX_HEADERS
    return {
        name: headers.get(sent, "") for name, sent in zip(SIGNATURE_HEADERS, family, strict=True)
    }


class Verifier:
    """Checks signatures per channel; build once (secrets are decoded here)."""

    def __init__(self, settings: Settings) -> None:
        self._default = [Webhook(secret.get_secret_value()) for secret in settings.webhook_secret]
        self._channels = {
            channel: [Webhook(secret.get_secret_value()) for secret in secrets]
            for channel, secrets in settings.webhook_channel_secrets.items()
        }
        if not self._default and not self._channels:
            log.warning("no WEBHOOK_SECRET is set: every webhook will be refused with 401")

    def verify(self, channel: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """True when ``body`` and ``headers`` carry a valid, timely signature for ``channel``.

        ``headers`` are the request's, or :func:`signature_headers` of them.
        """
        signers = self._channels.get(channel, self._default)
        wanted = signature_headers(headers)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            log.info("webhook %r refused: the body is not UTF-8", wanted["webhook-id"][:100])
            return False
        reason = "no secret is configured for this channel"
        for signer in signers:
            try:
                signer.verify(text, wanted, json_parse=False)
            except WebhookVerificationError as exc:
                reason = str(exc)
            except ValueError:  # a signature that is not "v1,<base64>"
                reason = "malformed webhook-signature"
            else:
                return True
        log.info(
            "webhook %r on channel %s refused: %s", wanted["webhook-id"][:100], channel, reason
        )
        return False
