"""Intake: how a payment comes in and becomes the canonical record on ``payment.intake``.

Owns the webhook body formats (``channels``), signatures, the cheap guards before a
body is read, a webhook body as a record or a 4xx (``webhook_body``), the webhook
request counts, the staging poller and its helper processes.

May import: ``app.recording`` (the staging pre-filter and the shared failure policy),
``app.kafka``, ``app.storage`` and the foundation (``app.models``, ``app.settings``,
``app.exceptions``, ``app.instruments``, ``app.tls``, ``app.months``, ``app.currencies``).
Never ``app.ops``, ``tables``, ``agents``, ``web`` or ``app.service``.
"""
