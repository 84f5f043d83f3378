"""Start the editor: the QApplication, the window, and the offscreen screenshot path."""

from __future__ import annotations

import os


def run_editor(cm, path: str = "", screenshot: str | None = None) -> int:
    """Show the editor on a captured model; with `screenshot`, render the window into that PNG and return 0."""
    if screenshot:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from graphsurgeon.ui.window import MainWindow

    app = QApplication.instance() or QApplication([])
    win = MainWindow(cm, path)
    win.resize(1600, 1000)
    win.show()
    app.processEvents()
    win.view.fit(min_scale=0.62 if screenshot else 0.0)
    app.processEvents()
    if screenshot:
        win.screenshot(screenshot)
        return 0
    return app.exec()
