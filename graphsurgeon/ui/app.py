"""Start the editor: the QApplication, the window, and the offscreen screenshot path."""

from __future__ import annotations

import os


def open_editor(source, *, meta: bool, eager_attention: bool = False, path: str = ""):
    """Show the window at once and capture `source` in its worker thread; returns (app, window).

    A cached view snapshot of the model is painted immediately; a LoRA dropped meanwhile on a Linear/Conv1D
    module is queued and applied when the capture is done (ui/operate/queued.py).
    """
    from PySide6.QtWidgets import QApplication

    from graphsurgeon.ui.window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow()
    win.resize(1600, 1000)
    win.show()
    win.open_model(source, meta=meta, path=path, eager_attention=eager_attention)
    return app, win


def screenshot_editor(cm, path: str, filename: str) -> None:
    """Render the editor window on a captured model, with `path` open, into a PNG (offscreen)."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from graphsurgeon.ui.window import READABLE_SCALE, MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow(cm, path)
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    win.view.fit(min_scale=READABLE_SCALE)  # again at the final viewport size
    app.processEvents()
    win.screenshot(filename)
