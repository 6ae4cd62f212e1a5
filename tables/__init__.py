"""Faust tables (RocksDB-backed state) and their storage options."""
