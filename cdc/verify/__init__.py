"""``cdc verify``: is what the connector produced equal to the legacy tables?

Compares each legacy table with its compacted topic (``cdc.verify.topic``) or with the
same table in a database ``cdc replay`` fills (``cdc.verify.target``), reading the legacy
database in short, paced, read-only chunks, and reports a difference only if it persists
once the compared side has caught up to the legacy reads (``cdc.verify.run``). The
comparison itself and the report are pure (``cdc.verify.compare``). See docs/verify.md.
"""

from __future__ import annotations

__all__: list[str] = []
