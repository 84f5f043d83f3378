"""Semantic layer benchmark: roles, names, groups and stacks of gpt2 (meta) against its capture, and the
recomputation after a LoRA drop (semantics + the attention view, what the editor redraws).

Run: .venv/bin/python benchmarks/semantics.py   (prints a table; targets in the last column)
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.graph.semantics import Semantics  # noqa: E402
from graphsurgeon.graph.stale_code import compile_now  # noqa: E402
from graphsurgeon.surgery import History, LoRAConfig, add_lora  # noqa: E402


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    capture("gpt2", meta=True)  # warm the imports and torch.export's first-call costs
    captures = []
    for _ in range(3):
        t0 = time.perf_counter()
        cm = capture("gpt2", meta=True)
        captures.append((time.perf_counter() - t0) * 1000)
    capture_ms = statistics.median(captures)
    sem_ms = median_ms(lambda: Semantics(cm), 5)
    names_ms = median_ms(lambda: [cm.blocks().view(p) for p in ("transformer", "transformer.h.0", "transformer.h.0.attn")]
                         if not cm.touch() else None, 5)
    history = History(cm)
    parts: dict[str, list[float]] = {"drop": [], "semantics": [], "view": [], "code": [], "undo": []}
    for _ in range(5):  # the editor's path after a drop: the edit, then semantics, then the view it repaints
        t0 = time.perf_counter()
        add_lora(cm, roles=("q",), layers=[3], config=LoRAConfig(r=8, alpha=16), history=history)
        t1 = time.perf_counter()
        cm.semantics()
        t2 = time.perf_counter()
        cm.blocks().view("transformer.h.3.attn")
        t3 = time.perf_counter()
        parts["drop"].append((t1 - t0) * 1000)
        parts["semantics"].append((t2 - t1) * 1000)
        parts["view"].append((t3 - t2) * 1000)
        t4 = time.perf_counter()
        compile_now(cm.gm)  # what the first run / export pays, not the editor's drop
        parts["code"].append((time.perf_counter() - t4) * 1000)
        t5 = time.perf_counter()
        history.undo()
        cm.semantics()
        cm.blocks().view("transformer.h.3.attn")
        parts["undo"].append((time.perf_counter() - t5) * 1000)
    drop_ms, resem_ms, view_ms, code_ms, undo_ms = (statistics.median(parts[k])
                                                    for k in ("drop", "semantics", "view", "code", "undo"))
    n_nodes = len(cm.gm.graph.nodes)
    rows = [
        ("capture gpt2 (meta), median of 3", f"{capture_ms:.0f} ms", ""),
        (f"semantics of gpt2 ({n_nodes} nodes), median of 5", f"{sem_ms:.1f} ms", ""),
        ("semantics / capture, same run", f"{sem_ms / capture_ms * 100:.1f} %", "≤ 10 %"),
        ("index + 3 views with names after an edit (blocks rebuilt)", f"{names_ms:.1f} ms", ""),
        ("after a drop on h.3 q: the edit (insert + check; code left stale)", f"{drop_ms:.1f} ms", ""),
        ("  … semantics recomputed", f"{resem_ms:.1f} ms", ""),
        ("  … block index + the h.3 attention view with names", f"{view_ms:.1f} ms", ""),
        ("  semantics + view / the edit itself, same run", f"{(resem_ms + view_ms) / drop_ms:.2f}×", ""),
        ("  module code regenerated when first run (not on the drop)", f"{code_ms:.1f} ms", ""),
        ("undo: edit + semantics + view (recalled: graph as before)", f"{undo_ms:.1f} ms", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")


if __name__ == "__main__":
    main()
