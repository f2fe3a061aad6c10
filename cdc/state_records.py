"""The one reader of the state topic's versioned JSON records.

The stream position, the schema history and the snapshot state are each stored as a JSON
object with a ``version``; each is bumped on an incompatible change so an older cdc
refuses a newer record instead of misreading it. This is where that refusal is made, the
same way for all three (pure: bytes in, a dict or a ValueError out).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["load_versioned"]


def load_versioned(data: bytes, *, version: int, what: str, hint: str) -> dict[str, Any]:
    """The JSON object of a stored ``what`` record written at ``version``.

    Args:
        data: the record's value.
        version: the only version this cdc reads.
        what: the record, for messages ("stream position").
        hint: what the user can do about a record of another version.

    Raises:
        ValueError: not JSON, not an object, or another version (a corrupt or newer
            record: the callers map it to the error a person must act on).
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"unreadable {what}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        # A corrupt stored record, not a caller's type error: ValueError like bad JSON.
        raise ValueError(f"unreadable {what}: expected a JSON object")  # noqa: TRY004
    found = obj.get("version")
    if found != version:
        raise ValueError(
            f"{what}: version {found!r} is unknown to this cdc (it reads {version}): {hint}"
        )
    return obj
