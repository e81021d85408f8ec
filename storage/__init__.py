"""Durable member state: RocksDB through rocksdict, and its in-memory twin."""
