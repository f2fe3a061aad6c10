"""``python -m cdc``: the same CLI as the ``cdc`` console script."""

from __future__ import annotations

from cdc.cli import main

if __name__ == "__main__":
    main()
