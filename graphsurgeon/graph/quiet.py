"""Keep torch's internal retries out of the user's terminal."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_fake_kernels() -> Iterator[None]:
    """Silence torch's fake-tensor logger: a meta kernel that fails (e.g. `_grouped_mm` on float32) is logged with a
    full traceback although the caller handles the error (retry, decomposition, or a one-line note)."""
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)
