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


def open_and_wait(app, win: MainWindow, source: str, started: float) -> tuple[float, float]:
    """win.open_model(source): seconds from `started` (time.time()) to the first frame showing it, and to editable."""
    win.open_model(source, meta=True)
    app.processEvents()
    first = None
    if win.controller.preview is not None:  # a cached snapshot is on screen
        frame(win)
        first = time.time() - started
    failed = []
    win.model_ready.connect(app.quit)  # the event loop idles (GIL free for the capture) as in the real app
    win._capture_signals.failed.connect(lambda msg: (failed.append(msg), app.quit()))
    app.exec()
    win.model_ready.disconnect(app.quit)
    if failed:
        sys.exit(f"capture failed: {failed[0]}")
    frame(win)
    ready = time.time() - started
    return (first if first is not None else ready), ready


def new_window(app) -> MainWindow:
    win = MainWindow()
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    return win


def probe(started: float) -> None:
    """Child process: a new editor opening gpt2 as `graphsurgeon` does; prints seconds since `started`."""
    app = QApplication([])
    first, ready = open_and_wait(app, new_window(app), "gpt2", started)
    print(json.dumps({"first": first, "ready": ready}))


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
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GRAPHSURGEON_CACHE_DIR"] = cache
        win = new_window(app)
        open_and_wait(app, win, "tiny-gpt2", time.time())  # a running editor: imports and first export done
        t0 = time.perf_counter()
        cm = capture("gpt2", meta=True)
        t_capture = time.perf_counter() - t0  # the peer: a bare capture in the same warm process
        _, miss_ready = open_and_wait(app, win, "gpt2", time.time())
        open_and_wait(app, win, "tiny-gpt2", time.time())
        hit_first, hit_ready = open_and_wait(app, win, "gpt2", time.time())
    rows.append(("File → Open gpt2 in a running editor, view cache warm: first frame", f"{hit_first * 1e3:.0f} ms",
                 f"editable after {hit_ready:.2f} s", "≤ 3 s"))
    rows.append(("File → Open gpt2 in a running editor, cache empty: first frame", f"{miss_ready:.2f} s",
                 f"bare capture in this process {t_capture:.2f} s → {miss_ready / t_capture:.2f}×", "≤ 3 s"))
    bg = cm.blocks()
    largest = max(bg.paths(), key=lambda p: len(bg.view(p).blocks))
    win = MainWindow(cm)
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
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
