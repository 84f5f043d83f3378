"""Editor benchmark (offscreen, 1600x1000): open gpt2 to first frame, frame times of composite views, navigation.

Run: .venv/bin/python benchmarks/ui.py   (prints a table; targets in the last column)
"""

from __future__ import annotations

import os
import statistics
import time

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PySide6.QtGui import QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from graphsurgeon.capture import capture  # noqa: E402
from graphsurgeon.ui.window import MainWindow  # noqa: E402


def frame(win: MainWindow) -> float:
    """One render of the viewport into a QImage, in ms."""
    vp = win.view.viewport()
    img = QImage(vp.size(), QImage.Format_ARGB32_Premultiplied)
    t0 = time.perf_counter()
    p = QPainter(img)
    win.view.render(p)
    p.end()
    return (time.perf_counter() - t0) * 1e3


def median_frame(win: MainWindow, n: int = 30) -> float:
    frame(win)
    return statistics.median(frame(win) for _ in range(n))


def main() -> None:
    app = QApplication.instance() or QApplication([])
    t0 = time.perf_counter()
    cm = capture("gpt2", meta=True)
    t_capture = time.perf_counter() - t0
    win = MainWindow(cm)
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    frame(win)
    t_open = time.perf_counter() - t0
    bg = cm.blocks()
    largest = max(bg.paths(), key=lambda p: len(bg.view(p).blocks))
    rows = []
    rows.append(("open gpt2 (meta) to first painted frame", f"{t_open:.2f} s", f"capture alone {t_capture:.2f} s", "≤ 3 s"))
    win.navigate("transformer.h.0.attn")
    app.processEvents()
    n_attn = len(win.scene.blocks)
    rows.append((f"frame of transformer.h.0.attn ({n_attn} blocks, fit)", f"{median_frame(win):.1f} ms", "median of 30", "≤ 16 ms"))
    win.view.resetTransform()  # 1:1: every label drawn
    rows.append((f"frame of transformer.h.0.attn at 1:1 (text on)", f"{median_frame(win):.1f} ms", "median of 30", "≤ 16 ms"))
    win.view.resetTransform()
    t = time.perf_counter()
    win.view.scale(1.01, 1.01)  # a zoom step invalidates the device cache
    frame(win)
    rows.append(("frame of transformer.h.0.attn after a zoom step (cache cold)", f"{(time.perf_counter() - t) * 1e3:.1f} ms", "one frame", "≤ 16 ms"))
    win.navigate(largest)
    app.processEvents()
    rows.append((f"frame of largest level '{largest or '(root)'}' ({len(win.scene.blocks)} blocks, fit)",
                 f"{median_frame(win):.1f} ms", "median of 30", "≤ 50 ms"))
    times = []
    for _ in range(7):
        win.navigate("transformer.h.0")
        app.processEvents()
        t = time.perf_counter()
        win.navigate("transformer.h.0.attn")
        frame(win)
        times.append((time.perf_counter() - t) * 1e3)
    rows.append(("navigate into a composite and paint (h.0 → attn)", f"{statistics.median(times):.1f} ms", "median of 7", "≤ 100 ms"))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print(" | ".join(h.ljust(w[i]) for i, h in enumerate(["measure", "result", "note", "target"])))
    for r in rows:
        print(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)))


if __name__ == "__main__":
    main()
