"""Benchmarks: the Raft core in memory, real clusters, and etcd side by side."""
