"""Fixtures shared by the pipeline's integration tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.pipeline import fresh_pipeline, run_id
from tests.stack import Stack


@pytest.fixture
def run(stack: Stack) -> str:
    """A run id, with the payment tables emptied and the service's topics recreated."""
    asyncio.run(fresh_pipeline(stack))
    return run_id()


@pytest.fixture
async def empty_database(stack: Stack) -> AsyncIterator[str]:
    """A brand-new database on the stack's server, dropped afterwards."""
    name = f"migrations_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(**stack.db_connect_kwargs("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def connection(stack: Stack, empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the brand-new database."""
    connection = await asyncpg.connect(**stack.db_connect_kwargs(empty_database))
    try:
        yield connection
    finally:
        await connection.close()
