"""A troika member: stage actors (transport, raft, apply, storage) in one Trio nursery."""
