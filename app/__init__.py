"""The payment-recording service, one room per concern (docs/architecture.md, "Rooms").

``app.service`` is the composition root (nothing imports it); ``intake``, ``recording``,
``ops``, ``kafka`` and ``storage`` are the rooms; ``models``, ``settings``,
``exceptions``, ``tls``, ``instruments``, ``months`` and ``currencies`` the foundation.
"""
