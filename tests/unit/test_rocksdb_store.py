"""The RocksDB store opens with our bounded options and keeps what is written."""

from __future__ import annotations

from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from app.settings import Settings
from tables.rocksdb import MIB, table_options


def test_rocksdb_opens_with_the_service_options(tmp_path: Path) -> None:
    options = RocksDBOptions(**table_options(Settings()), use_rocksdict=True)
    assert options.block_cache_size == Settings().rocksdb_block_cache_mb * MIB
    db = options.open(tmp_path / "references-0.db")
    try:
        db[b"REF-1"] = b"fingerprint|payment-id"
        assert db[b"REF-1"] == b"fingerprint|payment-id"
    finally:
        db.close()
    reopened = options.open(tmp_path / "references-0.db")
    try:
        assert reopened[b"REF-1"] == b"fingerprint|payment-id"
    finally:
        reopened.close()
