"""Kafka: our topics, the bytes on them, and every client that reads or writes them.

Owns the topic names, the codecs, the publisher, the command-line topic reader, the
/health probe, and Faust's aiokafka transport with its offset fixes.

May import: the foundation only (``app.models``, ``app.settings``, ``app.exceptions``,
``app.instruments``, ``app.tls``). Never ``app.storage`` or anything above it.
"""
