"""The ceiling of bench/webhooks: a bare aiohttp handler with the service's signature check.

``python -m bench.webhook_ceiling PORT SECRET`` serves POST on every path: verify
the Standard Webhooks signature with the same package, answer 201. No parsing,
no Kafka, no Redis: what aiohttp and the HMAC alone cost.
"""

from __future__ import annotations

import sys

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]
    signer = Webhook(secret)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            signer.verify(body.decode(), dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"status": "created"}, status=201)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
