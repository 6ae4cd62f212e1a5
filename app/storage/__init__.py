"""Storage: the Postgres pool, the migrations runner, partitions, the staging table, and Redis.

May import: the foundation only (``app.models``, ``app.settings``, ``app.exceptions``,
``app.instruments``, ``app.tls``, ``app.months``). Never ``app.kafka`` or anything above it.
"""
