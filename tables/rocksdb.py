"""RocksDB options every table of this service opens with.

faust-streaming gives each partition's RocksDB its own block cache (2 GiB by
default) and 64 MiB write buffers; with 12 partitions per table that would claim
the whole machine. These bounds come from Settings so an operator can size them.
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings

MIB = 1024 * 1024


def table_options(settings: Settings) -> dict[str, Any]:
    """Keyword options for ``app.Table(..., options=table_options(settings))``."""
    return {
        "block_cache_size": settings.rocksdb_block_cache_mb * MIB,
        "block_cache_compressed_size": settings.rocksdb_block_cache_mb * MIB,
        "write_buffer_size": settings.rocksdb_write_buffer_mb * MIB,
        "max_write_buffer_number": 2,
        "max_open_files": 256,
    }
