"""cdc: stream a PostgreSQL database's changes into Kafka retention and compacted topics."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
