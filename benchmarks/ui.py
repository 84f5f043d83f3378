"""Editor benchmark (offscreen, 1600x1000): open gpt2 to first frame, frame times of composite views, navigation.

Run: .venv/bin/python benchmarks/ui.py   (prints a table; targets in the last column)

"Open" is measured as a user meets it: a new process that runs what `graphsurgeon` runs (the editor on
gpt2's architecture), timed from just before the process starts to the first painted frame showing the
model, and to the moment it can be edited (the capture is in) — once with an empty view cache (the first
launch ever) and once with the cache the first launch wrote. Then File → Open gpt2 in a warm process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
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


def probe(started: float) -> None:
    """Child process: open the editor as `graphsurgeon` does; print seconds since `started` (time.time())."""
    from graphsurgeon.ui.app import open_editor

    app, win = open_editor("gpt2", meta=True)
    app.processEvents()
    first = None
    if win.scene.blocks:  # a cached snapshot is on screen
        frame(win)
        first = time.time() - started
    win.model_ready.connect(app.quit)  # the event loop idles (GIL free for the capture) as in the real app
    win._capture_signals.failed.connect(lambda msg: sys.exit(f"capture failed: {msg}"))
    app.exec()
    frame(win)
    ready = time.time() - started
    print(json.dumps({"first": first if first is not None else ready, "ready": ready}))


def launch(cache: str) -> dict:
    env = dict(os.environ, GRAPHSURGEON_CACHE_DIR=cache)
    started = time.time()
    out = subprocess.run([sys.executable, __file__, "--probe", repr(started)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def open_rows() -> list[tuple[str, str, str, str]]:
    """Launch → first frame / editable, cache miss then hits (median of 3), in child processes."""
    with tempfile.TemporaryDirectory() as cache:
        miss = launch(cache)
        hits = [launch(cache) for _ in range(3)]
    first = statistics.median(h["first"] for h in hits)
    ready = statistics.median(h["ready"] for h in hits)
    return [
        ("launch → first painted frame of gpt2 (meta), view cache warm", f"{first:.2f} s",
         f"median of 3; editable after {ready:.2f} s", "≤ 3 s"),
        ("launch → first painted frame of gpt2, first launch (cache empty)", f"{miss['first']:.2f} s",
         "the graph appears when the capture is in", "(≤ 3 s)"),
    ]


def main() -> None:
    rows = open_rows()
    app = QApplication.instance() or QApplication([])
    capture("tiny-gpt2", meta=True)  # the warm process: imports and the first export done
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
    rows.append(("File → Open gpt2 (meta) in a running editor, to first frame", f"{t_open:.2f} s",
                 f"capture alone {t_capture:.2f} s", "≤ 3 s"))
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
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe(float(sys.argv[2]))
    else:
        main()
