"""Shared state built on the leader and the lock store (key/value log, and more)."""
