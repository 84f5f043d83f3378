"""SIGTERM and SIGHUP as exceptions, so cleanup code (`except BaseException`, `finally`) runs as on Ctrl-C.

A plain `kill` or `timeout` sends SIGTERM, a closed terminal SIGHUP; by default both end the process at
once and leave temporary files behind. Inside `terminations_raise()` they raise `Terminated` instead.
"""

from __future__ import annotations

import contextlib
import signal
import threading

CAUGHT = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM, SIGHUP); like KeyboardInterrupt, not an Exception."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # what a shell reports for a process killed by the signal


def _raise(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminations_raise():
    """While inside: SIGTERM / SIGHUP raise Terminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in CAUGHT:
        if signal.getsignal(s) is signal.SIG_IGN:  # nohup: the user asked to ignore it
            continue
        try:
            previous[s] = signal.signal(s, _raise)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
