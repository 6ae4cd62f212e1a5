"""The peers of ``bench/staging --peers``: the same staging job without this project's framework.

``job`` defines the job (ids, checks, encodings, SQL) with the standard library only, so both
virtualenvs import it: the plain asyncio peer runs in ``.venv`` (aiokafka, asyncpg), the Quix
Streams peer in ``.venv-peers`` (``bench/peers/requirements.txt``). Neither imports ``app``.
"""
