"""SIGINT / SIGTERM / SIGHUP while Qt's event loop waits: the editor flushes its autosave and exits 130 / 143 / 129.

Python runs a signal handler only when the interpreter gets control back, and an idle Qt loop never gives it back:
before, an idle editor ignored Ctrl-C and `kill` until SIGKILL. Here Python's C-level handler writes the signal's
number to a socket (`signal.set_wakeup_fd`), a QSocketNotifier on the other end wakes the loop, and the Python
handler then runs: it writes the autosave an edit left pending (never clears it, so the next start offers it) and
ends the loop with 128 + the signal number, what a shell reports for a process the signal ended.
"""

from __future__ import annotations

import contextlib
import signal
import socket

from PySide6.QtCore import QSocketNotifier

QUIT = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


@contextlib.contextmanager
def quit_on_signals(app, before_quit=lambda signum: None):
    """While inside (around `app.exec()`): each signal of QUIT calls before_quit(signum), then app.exit(128 + signum).
    A signal ignored when the editor started (nohup) stays ignored; the previous handlers come back on leaving."""
    read, write = socket.socketpair()
    read.setblocking(False)
    write.setblocking(False)
    notifier = QSocketNotifier(read.fileno(), QSocketNotifier.Read)
    notifier.activated.connect(lambda *_: _drain(read))  # waking the loop is its job; the handler below runs now

    def handler(signum, frame) -> None:
        try:
            before_quit(signum)
        finally:
            app.exit(128 + signum)

    previous = {}
    old_fd = signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
    try:
        for s in QUIT:
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        notifier.setEnabled(False)
        read.close()
        write.close()


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(64):
            pass
