"""Where graphsurgeon keeps per-user files: $GRAPHSURGEON_CACHE_DIR, default ~/.cache/graphsurgeon.

One rule for every file kept between runs: the view cache (`views/`), the editor's autosaves (`autosave/`) and
exports the self-check refused, kept for a bug report (`failed-exports/`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$GRAPHSURGEON_CACHE_DIR, default ~/.cache/graphsurgeon."""
    base = os.environ.get("GRAPHSURGEON_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "graphsurgeon"
