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


def test_window_and_cached_views_paint_before_torch_is_imported(tmp_path, tiny_gpt2, monkeypatch):
    """The command line, the window and a cached view snapshot need neither torch nor transformers: a launch shows
    them first and imports those (seconds) in the worker that captures."""
    import os
    import subprocess

    from graphsurgeon.capture.view_cache import cache_key, store_views
    from graphsurgeon.graph.snapshot import take_snapshot

    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path))
    store_views(cache_key("tiny-gpt2", meta=False), take_snapshot(tiny_gpt2))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    code = (
        "import sys\n"
        "import graphsurgeon.cli\n"
        "graphsurgeon.cli.build_parser()\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from graphsurgeon.capture.view_cache import cache_key, load_views\n"
        "from graphsurgeon.ui.window import MainWindow\n"
        "app = QApplication([])\n"
        "win = MainWindow()\n"
        "win.show()\n"
        "win.controller.set_preview(load_views(cache_key('tiny-gpt2', meta=False)), 'transformer.h.0.attn')\n"
        "win.refresh()\n"
        "app.processEvents()\n"
        "print(len(win.scene.blocks), sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    blocks, imported = out.stdout.split(" ", 1)
    assert int(blocks) == len(tiny_gpt2.blocks().view("transformer.h.0.attn").blocks) and imported.strip() == "[]"


def test_a_preset_opens_on_its_shipped_module_tree_before_torch_is_imported(tmp_path):
    """An empty cache: `graphsurgeon` (gpt2) paints GPT-2's module hierarchy in its first frame from the tree shipped
    with the preset; torch and transformers are imported afterwards, by the worker (here held back, to look)."""
    import os
    import subprocess

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", GRAPHSURGEON_CACHE_DIR=str(tmp_path))
    code = (
        "import sys\n"
        "import graphsurgeon.ui.opening as opening\n"
        "opening.Opener._work = lambda self, *args: None  # the worker would import torch: not this test's subject\n"
        "from graphsurgeon.ui.app import open_editor\n"
        "app, win = open_editor('gpt2', meta=True)\n"
        "app.processEvents()\n"
        "blocks = sorted(win.scene.blocks)\n"
        "win.navigate('transformer.h.0.attn')  # a LoRA dropped on the tree is queued, still without torch\n"
        "queued = win.operate.drop('m:transformer.h.0.attn.c_attn', {'r': 8, 'alpha': 16, 'dropout': 0.0})\n"
        "print(win.opener.showing, '|', blocks, '|', queued, '|',\n"
        "      sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    showing, blocks, queued, imported = (part.strip() for part in out.stdout.split("|"))
    assert showing == "shipped module tree" and imported == "[]" and queued == "True"
    assert blocks == str(sorted(["m:transformer", "m:lm_head"]))
