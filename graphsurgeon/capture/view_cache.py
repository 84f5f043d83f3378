"""A per-user cache of view snapshots, so the editor can paint a model while torch.export captures it.

Keyed by everything the views depend on: the model's config, architecture-only or not, the attention
implementation, and the torch / transformers / graphsurgeon versions. Files are JSON data written
atomically (temp file + rename); a missing, stale or unreadable file is simply a miss.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from graphsurgeon.cache_dir import cache_root
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.graph.snapshot import FORMAT, ViewSnapshot
from graphsurgeon.jsondata import read_json, schema_problems


def cache_dir() -> Path:
    """The views folder of the per-user cache: $GRAPHSURGEON_CACHE_DIR/views (default ~/.cache/graphsurgeon/views)."""
    return cache_root() / "views"


def _code_digest() -> str:
    """The source of the code that derives views (capture, graph/ with its semantic layer): a change to any of it,
    even without a version bump, is a miss."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in [root / "capture" / "exporter.py", *sorted((root / "graph").rglob("*.py"))]:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def cache_key(source, *, meta: bool, eager_attention: bool = False) -> str | None:
    """The key of a preset / folder / cached hub id; None for sources that are not cacheable (an nn.Module)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    from graphsurgeon.capture.presets import is_preset, load_preset
    from graphsurgeon.capture.sources import resolve

    try:  # a preset's config without resolve(), which would look up the hub cache for its weights; never a download
        config = (load_preset(str(source)).config if is_preset(str(source))
                  else resolve(str(source), download=False).config)
    except GraphsurgeonError:
        return None  # the capture itself reports the error
    ident = {"format": FORMAT, "config": config, "meta": bool(meta), "eager": bool(eager_attention),
             "versions": [_version(p) for p in ("torch", "transformers", "graphsurgeon")], "code": _code_digest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


MAX_VIEW_BYTES = 512 * 2**20  # an 80-layer model's views are ~30 MB
MAX_VIEW_DEPTH = 32  # a snapshot nests 9 deep
SCHEMA = {"format": int, "model_class": str, "source_name": str, "children": dict, "crumbs": dict, "search": dict,
          "views": dict}


def load_views(key: str | None) -> ViewSnapshot | None:
    """The cached snapshot for `key`, or None (no file, another format, too big or deep, not of a snapshot's shape).

    The file is the app's own but read as untrusted data: bounded in size and depth, checked field by field, its
    root view parsed at once (the first thing painted); anything that does not fit is a miss, never an error."""
    if key is None:
        return None
    collecting = gc.isenabled()
    gc.disable()  # parsing makes ~10^5 objects that all live: a full collection meanwhile (0.4 s measured) is waste
    try:
        data = read_json(cache_dir() / f"{key}.json", max_bytes=MAX_VIEW_BYTES, max_depth=MAX_VIEW_DEPTH)
        if not isinstance(data, dict) or data.get("format") != FORMAT or schema_problems(data, SCHEMA):
            return None
        if not all(isinstance(v, dict) for v in data["views"].values()) or "" not in data["views"]:
            return None
        snapshot = ViewSnapshot(data)
        snapshot.view("")
        return snapshot
    except (OSError, ValueError, KeyError, TypeError, AttributeError, GraphsurgeonError):
        return None
    finally:
        if collecting:
            gc.enable()


def store_views(key: str | None, snapshot: dict) -> Path | None:
    """Write `snapshot` (graph.snapshot.take_snapshot data) under `key`, atomically; None when nothing was written."""
    if key is None:
        return None
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".views-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(snapshot, f, separators=(",", ":"))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        return None  # a read-only or full disk costs speed, never the capture
    return folder / f"{key}.json"
