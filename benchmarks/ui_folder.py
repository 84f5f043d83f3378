"""Local folders' first frame (offscreen): launch → first painted frame, cold, against the gpt2 preset in the same run.

Run: .venv/bin/python benchmarks/ui_folder.py   (prints a table; targets in the last column)

Each launch is benchmarks/ui.py's probe: a new process running what `graphsurgeon edit MODEL` runs, timed from just
before the process starts to the first painted frame showing the model, and to editable (the capture is in).
Rows, each the median of LAUNCHES launches interleaved (so a burst of load on the shared machine hits each alike):
- the gpt2 preset, cache empty (the peer: its shipped module tree);
- a local folder holding gpt2's config as save_pretrained writes it (plus transformers_version), cache empty: the
  preset's shipped tree, found by the config's digest (capture/module_trees);
- a local folder with a config no preset has (gpt2 with 6 layers), cache empty: built on the meta device first;
- that folder again with its view cache emptied (a new graphsurgeon or torch version drops the views), its module
  tree kept: the tree cached by the config's digest.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ui import launch  # noqa: E402 - benchmarks/ui.py's launch probe

LAUNCHES = 3


def rows(gpt2_dir: str, other_dir: str) -> list[tuple[str, str, str, str]]:
    runs: dict[str, list[dict]] = {"preset": [], "folder": [], "other": [], "other-tree": []}
    for _ in range(LAUNCHES):
        with tempfile.TemporaryDirectory() as cache:
            runs["preset"].append(launch("gpt2", cache))
        with tempfile.TemporaryDirectory() as cache:
            runs["folder"].append(launch(gpt2_dir, cache))
        with tempfile.TemporaryDirectory() as cache:
            runs["other"].append(launch(other_dir, cache))
            shutil.rmtree(os.path.join(cache, "views"), ignore_errors=True)
            runs["other-tree"].append(launch(other_dir, cache))
    med = lambda key, k: statistics.median(r[k] for r in runs[key])  # noqa: E731
    peer = med("preset", "first")
    what = {"preset": "the gpt2 preset (peer)", "folder": "a folder with gpt2's config (save_pretrained's)",
            "other": "a folder with gpt2's config but 6 layers", "other-tree": "… again, views dropped, tree cached"}
    table = []
    for key, label in what.items():
        target = "≤ 3 s" if key in ("folder", "other-tree") else ""
        table.append((f"launch → first frame: {label}, cache empty" if key != "other-tree" else
                      f"launch → first frame: {label}", f"{med(key, 'first'):.2f} s",
                      f"{runs[key][0]['first_kind']}; {med(key, 'first_cpu'):.2f} CPU s; ×{med(key, 'first') / peer:.2f} "
                      f"the preset's; editable {med(key, 'ready'):.2f} s", target))
    return table


def main() -> None:
    from graphsurgeon.capture.presets import load_preset

    with tempfile.TemporaryDirectory() as folder:
        gpt2_dir, other_dir = os.path.join(folder, "gpt2"), os.path.join(folder, "gpt2-6")
        config = load_preset("gpt2").config
        for path, cfg in ((gpt2_dir, {**config, "transformers_version": "5.25.0"}), (other_dir, {**config, "n_layer": 6})):
            os.mkdir(path)
            with open(os.path.join(path, "config.json"), "w") as f:
                json.dump(cfg, f)
        table = rows(gpt2_dir, other_dir)
    load = os.getloadavg()[0]
    w = [max(len(r[i]) for r in table) for i in range(4)]
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(["measure", "result", "note", "target"])))
    for r in table:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))
    print(f"(median of {LAUNCHES} launches; load average when done: {load:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
