"""A worker thread's messages to the UI thread, through a plain queue the UI thread drains on a timer.

The editor's workers (open, export, the view cache) never call Qt: no signal is emitted off the UI thread and no Qt
object's last reference is dropped there. A worker posts (signal name, arguments); while any of its owner's workers
may still post, the UI thread takes the messages in order every few milliseconds and emits them there, on the owner's
own signals object. Cross-thread calls from Python threads into Qt are what PySide handles least well."""

from __future__ import annotations

import queue
import threading

from PySide6.QtCore import QObject, QTimer


class Inbox:
    """The workers of one owner (a QObject living on the UI thread) and what they posted, not yet delivered."""

    INTERVAL_MS = 15

    def __init__(self, owner: QObject, signals: QObject, **handlers) -> None:
        """`handlers`: signal name -> the owner's method it is connected to (called on the UI thread)."""
        self._signals = signals
        for signal, handler in handlers.items():
            getattr(signals, signal).connect(handler)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._timer = QTimer(owner)
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    def start(self, target, args: tuple, name: str) -> threading.Thread:
        """Run `target(*args)` in a daemon thread named "graphsurgeon <name>" (on the UI thread)."""
        thread = threading.Thread(target=target, args=args, name=f"graphsurgeon {name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        self._timer.start()
        return thread

    def post(self, signal: str, *args) -> None:
        """From a worker: emit `signals.<signal>(*args)` on the UI thread soon. Touches no Qt object."""
        self._queue.put((signal, args))

    def _drain(self) -> None:
        while True:
            try:
                signal, args = self._queue.get_nowait()
            except queue.Empty:
                break
            getattr(self._signals, signal).emit(*args)
        self._threads = [t for t in self._threads if t.is_alive()]
        if not self._threads and self._queue.empty():  # a finished worker posted everything before it ended
            self._timer.stop()
