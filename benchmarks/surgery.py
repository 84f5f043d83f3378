"""Surgery benchmark on gpt2 (meta capture: shapes only, no weights needed for timing).

Prints: one insertion with its local check (median of ≥ 20, target ≤ 50 ms), Q+V on all 12 layers as
one compound edit (target ≤ 1 s), and full validation as a ratio to a bare FakeTensorProp over the same
graph in the same run (target ≤ 1.5×). Run: .venv/bin/python benchmarks/surgery.py [model]
"""

from __future__ import annotations

import statistics
import sys
import time

from graphsurgeon.capture import capture
from graphsurgeon.graph.semantics import columns
from graphsurgeon.surgery import History, InsertLoRA, LoRAConfig, add_lora, find_targets
from graphsurgeon.validate import validate_full
from graphsurgeon.validate.full import bare_fake_prop


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(model: str = "gpt2") -> None:
    t0 = time.perf_counter()
    cm = capture(model, meta=True)
    capture_s = time.perf_counter() - t0
    nodes = len(cm.gm.graph.nodes)
    history = History(cm)
    target = find_targets(cm, ("q",))[0]
    config = LoRAConfig(r=8, alpha=16)

    def insert_one():
        history.do(InsertLoRA(target, config))  # includes check_insertion
        history.undo()

    insert_times = timed(insert_one, 25)
    alone = []
    for _ in range(25):
        t0 = time.perf_counter()
        history.do(InsertLoRA(target, config))
        alone.append(time.perf_counter() - t0)
        history.undo()
    def find_first():  # a search nobody has done: no remembered result, no replay cached
        cm.touch()
        columns._CACHE.clear()
        find_targets(cm)

    def find_again():  # the same structure seen before (another capture of this model): replays cached
        cm.touch()
        find_targets(cm)

    find_first_times, find_again_times = [], []
    for _ in range(7):  # interleaved so both see the same machine state
        find_first_times += timed(find_first, 1)
        find_again_times += timed(find_again, 1)
    find_times = timed(lambda: find_targets(cm), 5)

    def qv_all():
        add_lora(cm, ("q", "v"), "all", config, history=history)
        history.undo()

    qv_times = timed(qv_all, 5)
    add_lora(cm, ("q", "v"), "all", config, history=history)
    bare = bare_fake_prop(cm)
    full_times, bare_times = [], []
    for _ in range(5):  # interleaved so both see the same machine state
        full_times += timed(lambda: validate_full(cm), 1)
        bare_times += timed(bare, 1)
    assert validate_full(cm) == [], "the edited graph should validate"
    med = statistics.median
    rows = [
        ("capture (meta)", f"{capture_s * 1e3:.0f} ms", "", "1 run"),
        ("find_targets (q,k,v), first search", f"{med(find_first_times) * 1e3:.1f} ms", "≤ 5 ms", "median of 7"),
        ("find_targets, replays cached", f"{med(find_again_times) * 1e3:.1f} ms", "", "median of 7"),
        ("find_targets, unchanged graph (remembered)", f"{med(find_times) * 1e3:.2f} ms", "", "median of 5"),
        ("one insertion + local check", f"{med(alone) * 1e3:.1f} ms", "≤ 50 ms", "median of 25"),
        ("one insertion + local check + undo", f"{med(insert_times) * 1e3:.1f} ms", "", "median of 25"),
        ("Q+V on all layers (compound, +undo)", f"{med(qv_times) * 1e3:.0f} ms", "≤ 1000 ms", "median of 5"),
        ("full validation", f"{med(full_times) * 1e3:.0f} ms", "", "median of 5"),
        ("bare FakeTensorProp (peer)", f"{med(bare_times) * 1e3:.0f} ms", "", "median of 5"),
        ("full validation / bare FakeTensorProp", f"{med(full_times) / med(bare_times):.2f}×", "≤ 1.5×", "same run"),
    ]
    print(f"{model}: {nodes} nodes before edits, {len(cm.gm.graph.nodes)} with Q+V on all layers, "
          f"{len(cm.loras)} LoRA blocks")
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value':>10}  {'target':>10}  note")
    for name, value, target_text, note in rows:
        print(f"{name.ljust(w)}  {value:>10}  {target_text:>10}  {note}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
