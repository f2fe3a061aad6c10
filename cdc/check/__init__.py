"""``cdc check``: a read-only preflight of a connector before its first write.

The facts are gathered at the edges (``cdc.postgres.preflight``, ``cdc.kafka.preflight``)
into plain dataclasses (``cdc.check.facts``); pure functions turn them into findings,
each with its severity and fix (``cdc.check.findings``); ``cdc.check.run`` wires both for
``cdc check`` and for ``cdc run``'s start. See docs/operations.md, "Preflight: cdc check".
"""

from __future__ import annotations

__all__: list[str] = []
