"""Guards: a PySide6 wheel that leaks None's refcount (6.12.0 on Python 3.11) fails here; only ui/ imports Qt."""

from __future__ import annotations

import pathlib
import re
import sys

import pytest


def test_void_qt_calls_keep_none_alive():
    qtcore = pytest.importorskip("PySide6.QtCore")
    obj = qtcore.QObject()
    before = sys.getrefcount(None)
    for i in range(20000):
        obj.setObjectName("x")
    assert before - sys.getrefcount(None) < 100


def test_only_ui_imports_pyside6():
    root = pathlib.Path(__file__).resolve().parents[1] / "graphsurgeon"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "ui" not in p.relative_to(root).parts[:1]
                 and re.search(r"^\s*(from|import)\s+PySide6", p.read_text(), re.M)]
    assert offenders == []
