"""Snapshots: the initial one from an exported snapshot, and incremental ones (DBLog)."""
