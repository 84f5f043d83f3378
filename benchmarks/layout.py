"""Layout benchmark (offscreen, window 1600x1000): per composite, the layout alone (pure function, no Qt), the scale
the view opens at, its title size on screen, and one frame at that scale.

Models on the meta device: gpt2, bert-base-uncased, and a 4-layer Llama (the architecture of Llama 2/3; every layer
is alike, so one layer's composites stand for all). Layers other than the first are skipped (same views).
Run: .venv/bin/python benchmarks/layout.py   (prints a markdown table; targets: frames ≤ 16 ms, titles ≥ 10 px)
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import time

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRAPHSURGEON_CACHE_DIR", "/tmp/graphsurgeon-bench-cache")

from PySide6.QtWidgets import QApplication  # noqa: E402

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.ui.items import TITLE_PX  # noqa: E402
from graphsurgeon.ui.layout import layered  # noqa: E402
from graphsurgeon.ui.window import MainWindow  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui import median_frame  # noqa: E402


def llama():
    import torch
    import transformers as tf

    with torch.device("meta"):
        m = tf.LlamaForCausalLM(tf.LlamaConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=8,
                                               num_key_value_heads=4, intermediate_size=688, vocab_size=32000))
    return capture(m.eval())


def rows_for(app, name: str, cm) -> list[tuple]:
    win = MainWindow(cm, "")
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    out = []
    for path in cm.blocks().paths():
        if re.search(r"\.(?!0\b)\d+(\.|$)", path):  # layers after the first look the same
            continue
        win.navigate(path)
        app.processEvents()
        s = win.scene
        wires = list(s.wires.values())
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            lay = layered(s.boxes, wires, win.controller.viewport)
            times.append((time.perf_counter() - t0) * 1e3)
        scale = win.view.transform().m11()
        out.append((name, path or "(root)", len(s.boxes), len(wires), lay.bands, statistics.median(times), scale,
                    TITLE_PX * scale, median_frame(win, 15)))
    win.close()
    return out


def main() -> None:
    app = QApplication.instance() or QApplication([])
    rows = []
    for name, make in [("gpt2", lambda: capture("gpt2", meta=True)),
                       ("bert-base", lambda: capture("bert-base-uncased", meta=True)),
                       ("llama", llama)]:
        rows += rows_for(app, name, make())
    print("| model | composite | blocks | links | bands | layout ms | opens at | title px | frame ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[6]:.2f} | {r[7]:.1f} | {r[8]:.1f} |")
    lay = [r[5] for r in rows]
    frames = [r[8] for r in rows]
    print(f"\nlayout: median {statistics.median(lay):.1f} ms, max {max(lay):.1f} ms over {len(rows)} composites; "
          f"frames: median {statistics.median(frames):.1f} ms, max {max(frames):.1f} ms (target ≤ 16 ms); "
          f"views opening with titles drawn under 10 px (enlarged by level of detail): "
          f"{sum(1 for r in rows if r[7] < 10)}")


if __name__ == "__main__":
    main()
