"""Module trees known before torch is imported: what the editor paints first for a preset, a folder or a cached hub id.

A model's module tree (graph/module_tree) follows from its config.json and transformers' modeling code alone, so it is
found by the config's digest, with no torch: a preset's is shipped (capture/preset_trees); a local folder whose
config describes a preset's model (the same config but for metadata such as transformers_version) paints that
preset's shipped tree, and one that differs from a preset's only in its layer count paints that tree with its stack
resized (capture/tree_depth); any other folder (or hub id in the local Hugging Face cache) paints the tree the editor
derived the last time a model with that config was opened (per user, $GRAPHSURGEON_CACHE_DIR/trees, keyed by the
config and the torch / transformers / graphsurgeon versions).
Either way the editor's worker derives the tree again from the model it builds and repaints when they differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from graphsurgeon.capture import preset_trees
from graphsurgeon.capture.presets import is_preset, load_preset, preset_names
from graphsurgeon.capture.sources import MAX_CONFIG_BYTES
from graphsurgeon.graph.snapshot import FORMAT
from graphsurgeon.jsondata import read_json

MAX_TREE_BYTES = 256 * 2**20  # a 5,000-layer module tree is a few MB

METADATA_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype"}  # written by save_pretrained; no module depends on them
SHIPPED, CACHED = "shipped module tree", "cached module tree"  # how the tree painted first was known
RESIZED = "shipped module tree at the folder's depth"  # a preset's config but for the layer count (capture/tree_depth)
WHENCE = {SHIPPED: "shipped with graphsurgeon", CACHED: "as derived when its config last opened",
          RESIZED: "a preset's shipped modules at its number of layers"}


def model_digest(config: dict) -> str:
    """The digest of what a config says about the model: every key but the metadata ones."""
    kept = {k: v for k, v in config.items() if k not in METADATA_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def known_tree(source) -> tuple[dict, str] | None:
    """(module tree data, SHIPPED or CACHED) for a preset, a local folder or a cached hub id, read without torch; None
    when unknown."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    name = str(source)
    if is_preset(name):
        tree = preset_trees.shipped_tree(name)
        return (tree, SHIPPED) if tree is not None else None
    config = _folder_config(name)
    if config is None:
        return None
    digest = model_digest(config)
    for preset in preset_names():
        if model_digest(load_preset(preset).config) == digest:
            tree = preset_trees.shipped_tree(preset)
            if tree is not None:
                return {**tree, "source_name": name}, SHIPPED
    tree = _read(_cache_file(digest))
    if tree is not None:
        return {**tree, "source_name": name}, CACHED
    return _other_depth(config, name)


def _other_depth(config: dict, name: str) -> tuple[dict, str] | None:
    """A preset's shipped tree resized to the folder's layer count, when that is all their configs differ in."""
    from graphsurgeon.capture.tree_depth import depth_change, resize_tree

    for preset in preset_names():
        change = depth_change(load_preset(preset).config, config, METADATA_KEYS)
        tree = preset_trees.shipped_tree(preset) if change is not None else None
        resized = resize_tree(tree, change[1], change[2]) if tree is not None else None
        if resized is not None:
            return {**resized, "source_name": name}, RESIZED
    return None


def remember_tree(source, tree: dict) -> Path | None:
    """Keep the tree the worker derived for a folder or hub id, for its next first frame; None when nothing was written."""
    config = _folder_config(str(source)) if isinstance(source, (str, os.PathLike)) else None
    if config is None or is_preset(str(source)):
        return None
    path = _cache_file(model_digest(config))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tree-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(tree, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        return None  # a read-only or full disk costs speed, never the open
    return path


def _folder_config(name: str) -> dict | None:
    """The config.json of a local folder, or of a hub id's snapshot in the local cache (never a download)."""
    folder = Path(os.path.expanduser(name))
    if not folder.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from graphsurgeon.capture.hub import cached_snapshot

        folder = cached_snapshot(name)
        if folder is None:
            return None
    try:
        config = read_json(folder / "config.json", max_bytes=MAX_CONFIG_BYTES, what="a config.json")
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _cache_file(digest: str) -> Path:
    from graphsurgeon.cache_dir import cache_root

    versions = [_version(p) for p in ("torch", "transformers", "graphsurgeon")]
    key = hashlib.sha256(json.dumps([digest, FORMAT, versions]).encode()).hexdigest()[:32]
    return cache_root() / "trees" / f"{key}.json"


def _read(path: Path) -> dict | None:
    try:
        tree = read_json(path, max_bytes=MAX_TREE_BYTES, what="a module tree")  # the app's own file: distrusted
        return tree if tree.get("format") == FORMAT and tree.get("modules_only") else None
    except (OSError, ValueError, AttributeError):
        return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"
