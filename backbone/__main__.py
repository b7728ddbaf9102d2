"""``python -m backbone``: the same as the ``backbone`` console script."""

from __future__ import annotations

from backbone.cli import main

if __name__ == "__main__":
    main()
