"""Each store's SQL lives in its one module (docs/architecture.md, "One module per store")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.stack import ROOT

#: The modules that may hold SQL, each the one home of its store's statements.
STORES = {
    "app/recording/payment_store.py",
    "app/storage/staging_table.py",
    "app/storage/partitions.py",
    "app/storage/migrations.py",
    "app/intake/webhook_counts.py",
    "app/ops/operator_audit.py",
    # Not a store: the connection check every pool runs.
    "app/storage/database.py",
    # Not a store: reads Postgres' own session list (pg_stat_activity).
    "app/storage/stalled_sessions.py",
}

SQL = re.compile(r"\b(SELECT\s|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|DROP\s+TABLE)")

#: Tables of one store, each named only by that store's module.
TABLES = {
    "payment_staging": "app/storage/staging_table.py",
    "staging_process_log": "app/storage/staging_table.py",
    "payment_references": "app/recording/payment_store.py",
    "reference_retention": "app/recording/payment_store.py",
    "payment_service.outbox": "app/recording/payment_store.py",
    "webhook_request_counts": "app/intake/webhook_counts.py",
    "audit_log": "app/ops/operator_audit.py",
}


def _sources() -> list[Path]:
    return sorted(
        path
        for room in ("app", "agents", "tables", "web")
        for path in (ROOT / room).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def _strings(path: Path) -> list[str]:
    """The string literals of ``path`` that are code, not docstrings or comments."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_sql_is_written_only_in_the_store_modules() -> None:
    strays = {
        str(path.relative_to(ROOT)): [
            text.strip()[:60] for text in _strings(path) if SQL.search(text)
        ]
        for path in _sources()
        if str(path.relative_to(ROOT)) not in STORES
    }
    assert {name: found for name, found in strays.items() if found} == {}


def test_each_table_is_named_in_sql_by_its_store_alone() -> None:
    for path in _sources():
        name = str(path.relative_to(ROOT))
        for text in _strings(path):
            if not SQL.search(text):
                continue
            for table, home in TABLES.items():
                assert table not in text or name == home, f"{name} writes SQL on {table}"


def test_the_rule_finds_sql() -> None:
    """The scan would see a stray statement (so the tests above can fail)."""
    assert SQL.search("SELECT count(*) FROM public.payment_staging")
    assert SQL.search("UPDATE payment_service.outbox SET leased_until = now()")
    assert any(SQL.search(text) for text in _strings(ROOT / "app/storage/staging_table.py"))
