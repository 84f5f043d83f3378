"""The editor window as the UI tests open it: shown, exposed, and never blocked at teardown by a modal question."""

from __future__ import annotations

from graphsurgeon.ui.window import MainWindow


def shown_window(qtbot, cm=None, path: str = "") -> MainWindow:
    """A MainWindow of `cm` (None: empty) at `path`, shown and exposed; its yes/no questions answer yes, so closing
    it at teardown with unsaved edits does not block on a modal box (offscreen)."""
    win = MainWindow(cm, path)
    qtbot.addWidget(win)
    win.operate.ask = lambda *a: True
    win.show()
    qtbot.waitExposed(win)
    return win
