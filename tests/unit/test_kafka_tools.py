"""Every Kafka tool the docs tell an operator to run has its wrapper in bin/."""

from __future__ import annotations

import os
import re

from tests.stack import ROOT

#: `bin/kafka-configs …` or `kafka-delete-records` in a code span: a tool to run.
TOOL = re.compile(r"`(?:bin/)?(kafka-[a-z]+(?:-[a-z]+)*)\b")


def named_tools() -> dict[str, set[str]]:
    """Tool name → the documents naming it."""
    found: dict[str, set[str]] = {}
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name in TOOL.findall(document.read_text()):
            found.setdefault(name, set()).add(document.name)
    return found


def test_every_kafka_tool_in_the_docs_has_a_wrapper() -> None:
    found = named_tools()
    assert {"kafka-topics", "kafka-configs", "kafka-consumer-groups"} <= set(found)
    missing = {
        name: sorted(where)
        for name, where in found.items()
        if not os.access(ROOT / "bin" / name, os.X_OK)
    }
    assert missing == {}, "add bin/<tool> like the others (scripts/stack java ...)"


def test_every_wrapper_runs_a_class_through_scripts_stack() -> None:
    for wrapper in sorted((ROOT / "bin").iterdir()):
        text = wrapper.read_text()
        assert re.search(
            r'exec "\$\(dirname "\$0"\)/\.\./scripts/stack" java \S+ [\w.]+ "\$@"', text
        ), wrapper.name
