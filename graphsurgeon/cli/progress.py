"""A progress line on stderr for the command line: what runs and for how long, while something slow runs.

On a terminal the line is rewritten in place and erased when the work is done; elsewhere (a pipe, a log, a test)
nothing is printed unless GRAPHSURGEON_PROGRESS=1, which prints one plain line per step — so a script reading
stderr still gets only notes and errors.
"""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """Callable with one line of text; `done()` erases the line on a terminal."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = self.tty or os.environ.get("GRAPHSURGEON_PROGRESS") == "1"
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{text} … {time.monotonic() - self.start:.1f} s"
        try:
            if self.tty:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
            self.shown = True
        except (OSError, ValueError):  # stderr closed: progress is not worth an error
            self.enabled = False

    def done(self) -> None:
        if self.tty and self.shown:
            try:
                self.stream.write("\r\033[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
        self.shown = False
