"""Recording: deciding each record once (created, duplicate, conflict) and publishing it.

Owns the recorder (a batch's decisions and dead letters), the payment store (Postgres,
the authority on dedup, and every statement on its tables), the outbox relay, reference
retention, the failure policy, the decisions webhooks wait for (Redis) and the audit
trail of decisions.

May import: ``app.kafka``, ``app.storage`` and the foundation (``app.models``,
``app.settings``, ``app.exceptions``, ``app.instruments``, ``app.tls``, ``app.months``).
Never ``app.intake``, ``app.ops``, ``tables``, ``agents``, ``web`` or ``app.service``.
"""
