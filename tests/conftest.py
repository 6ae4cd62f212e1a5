"""Session fixtures: the stack for integration tests, marked so they can be told apart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack, native_stack, native_stack_env, testcontainers_stack

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The running stack (started through scripts/stack, or containers with TEST_STACK)."""
    mode = os.environ.get("TEST_STACK", "native")
    if mode == "testcontainers":
        with testcontainers_stack() as containers:
            yield containers
    elif mode == "native":
        yield native_stack(native_stack_env())
    else:
        raise pytest.UsageError(f"TEST_STACK={mode!r}: use 'native' (default) or 'testcontainers'")


@pytest.fixture
def native(stack: Stack) -> Stack:
    """The stack, for tests that drive scripts/stack itself (no containers)."""
    if not stack.native:
        pytest.skip("drives scripts/stack; TEST_STACK=testcontainers has no native stack")
    return stack
