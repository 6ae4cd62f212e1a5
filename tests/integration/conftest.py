"""Fixtures shared by the pipeline's integration tests."""

from __future__ import annotations

import asyncio

import pytest

from tests.pipeline import fresh_pipeline, run_id
from tests.stack import Stack


@pytest.fixture
def run(stack: Stack) -> str:
    """A run id, with the payment tables emptied and the service's topics recreated."""
    asyncio.run(fresh_pipeline(stack))
    return run_id()
