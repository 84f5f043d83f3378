"""Module trees shipped with the built-in presets, so the editor paints a preset's modules before torch is imported.

A preset's module tree (graph/module_tree: its composites, module classes and parameter counts) follows from its
config and transformers' modeling code alone. It is derived in the repo — `python -m graphsurgeon.capture.preset_trees`
(`make preset-trees`) builds each preset on the meta device and writes assets/presets/modules/<preset>.json — and read
at launch without torch or transformers (importing those costs seconds). It cannot go stale unseen:
tests/test_preset_trees.py derives every tree again and compares it with the shipped file, a file whose config digest
is not its preset's config any more is never used, and the editor's worker, once it has built the model, compares the
tree it derives with the one painted and paints its own when they differ (another transformers version may build
other modules).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from graphsurgeon.capture.presets import PRESET_DIR, is_preset, load_preset, preset_names
from graphsurgeon.graph.snapshot import FORMAT

TREE_DIR = PRESET_DIR / "modules"


def tree_file(preset: str) -> Path:
    return TREE_DIR / f"{preset}.json"


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def shipped_tree(preset: str) -> dict | None:
    """The module tree shipped for `preset` as graph.snapshot data, or None: not a preset, no file, a file made for
    another config or snapshot format, or unreadable (then the editor derives the tree as for any model)."""
    if not isinstance(preset, str) or not is_preset(preset):
        return None
    try:
        shipped = json.loads(tree_file(preset).read_text(encoding="utf-8"))
        tree = shipped["tree"]
        if shipped["config_sha256"] != config_digest(load_preset(preset).config) or tree["format"] != FORMAT:
            return None
        return tree if tree["source_name"] == preset and tree.get("modules_only") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def derive_tree(preset: str) -> dict:
    """`preset`'s module tree now: the model built on the meta device (imports torch and transformers)."""
    from graphsurgeon.capture import build_model
    from graphsurgeon.graph.module_tree import module_tree_data

    return module_tree_data(build_model(preset, meta=True), preset)


def write_tree(preset: str) -> Path:
    """Derive `preset`'s tree and write it to its file atomically (temp file + rename)."""
    data = {"config_sha256": config_digest(load_preset(preset).config),
            "made_with": {p: metadata.version(p) for p in ("torch", "transformers")},
            "tree": derive_tree(preset)}
    TREE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=TREE_DIR, prefix=f".{preset}-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)  # one value a line: a regenerated tree diffs readably
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; it is a file of the repo
    os.replace(tmp, tree_file(preset))
    return tree_file(preset)


def main(names: list[str]) -> int:
    for name in names or preset_names():
        if not is_preset(name):
            print(f"{name!r} is not a built-in preset; choose from {', '.join(preset_names())}.", file=sys.stderr)
            return 2
        path = write_tree(name)
        print(f"{name}: {len(json.loads(path.read_text(encoding='utf-8'))['tree']['views'])} composites → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
