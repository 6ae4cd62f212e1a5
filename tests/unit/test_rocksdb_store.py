"""The RocksDB store opens with our bounded options and keeps what is written."""

from __future__ import annotations

import time
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


def test_a_ttl_store_gives_back_the_exact_bytes_and_expires_entries(tmp_path: Path) -> None:
    value = bytes(range(48))  # an encoded KnownReference
    options = RocksDBOptions(**table_options(Settings()), ttl=1, use_rocksdict=True)
    db = options.open(tmp_path / "references-v2-0.db")
    try:
        db[b"REF-1"] = value
        assert db[b"REF-1"] == value  # the TTL store's timestamp stays inside RocksDB
        time.sleep(2.1)
        db[b"REF-2"] = value
        db.compact_range(None, None)  # expired entries go at compaction
        assert db.get(b"REF-1") is None
        assert db[b"REF-2"] == value
    finally:
        db.close()
