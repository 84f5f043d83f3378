"""The editor's operate gesture: Qt-free edit session (session.py), the block palette (palette.py), the diagnostics
dock (diagnostics.py) and the window wiring (window_ops.py). MainWindow calls `install(window)` at the end of its
__init__."""


def install(window):
    """Add the palette, history, diagnostics, budget, drop handling and recipe/export actions to `window`."""
    from graphsurgeon.ui.operate.window_ops import Operate

    window.operate = Operate(window)
    return window.operate
