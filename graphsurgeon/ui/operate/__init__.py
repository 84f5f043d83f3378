"""The editor's operate gesture: Qt-free edit session (session.py) and the block palette (palette.py).

No `install(window)` here yet: the window integration is not done (see the issue 6 report).
"""
