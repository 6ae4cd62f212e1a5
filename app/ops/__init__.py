"""Operations: what operators run and read.

Owns the CLI commands, the dead-letter and staging admin, lookup, reconcile, today's
stats, health report, the operator audit log, API-token roles and the log format.

May import: ``app.intake``, ``app.recording``, ``tables``, ``app.kafka``, ``app.storage``
and the foundation. Never ``agents``, ``web`` or ``app.service``: the commands read what
they use of the app through a small protocol (``commands.Operated``).
"""
