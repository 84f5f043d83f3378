"""Keyboard shortcuts as real key presses, the File menu's dialogs, and closing with unsaved edits (offscreen)."""

import json

import pytest
import torch
from PySide6.QtCore import Qt

from graphsurgeon.capture import capture
from graphsurgeon.ui.operate import window_ops
from test_ui_operate import BERT_ATTN, _drop, _inputs, _palette_mime, _window


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_AUTOSAVE_DIR", str(tmp_path / "autosave"))


def _active(qtbot, win):
    """Shortcuts (QAction on the window, WindowShortcut context) fire only in the active window; offscreen
    activateWindow() makes it active, and QTest key clicks on it then go through Qt's shortcut map."""
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)
    win.view.setFocus()
    return win


def _action(menu, text: str):
    return next(a for a in menu.actions() if a.text().startswith(text))


def test_ctrl_z_ctrl_shift_z_and_delete_as_key_presses(qtbot):
    cm = capture("tiny-bert")
    x = _inputs(cm)
    win = _active(qtbot, _window(qtbot, cm, BERT_ATTN))
    ops = win.operate
    budget0 = ops.budget_label.text()
    _drop(win, _palette_mime(qtbot, win, r=4), f"m:{BERT_ATTN}.query")
    path = f"{BERT_ATTN}.lora_q"
    with torch.no_grad():
        cm.gm.get_submodule(f"{path}.lora").lora_B.weight.normal_()  # non-zero B: redo must give these outputs
    edited = cm.run(**x)["last_hidden_state"].clone()
    budget1 = ops.budget_label.text()
    assert budget1 != budget0 and ops.stack.index() == 1

    qtbot.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier)
    assert cm.loras == {} and f"m:{path}" not in win.scene.blocks
    assert ops.stack.index() == 0 and ops.budget_label.text() == budget0

    qtbot.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert list(cm.loras) == [path] and f"m:{path}" in win.scene.blocks and ops.stack.index() == 1
    assert torch.equal(cm.run(**x)["last_hidden_state"], edited) and ops.budget_label.text() == budget1

    win.scene.select([f"m:{path}"])
    qtbot.keyClick(win.view, Qt.Key_Delete)
    assert cm.loras == {} and ops.stack.index() == 2 and ops.stack.undoText().startswith("Remove LoRA Layer")
    qtbot.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier)
    assert list(cm.loras) == [path] and torch.equal(cm.run(**x)["last_hidden_state"], edited)


def test_save_open_export_through_the_file_menu(qtbot, tmp_path, monkeypatch):
    infos, warnings = [], []
    monkeypatch.setattr(window_ops.QMessageBox, "information", lambda *a: infos.append(a[2]))
    monkeypatch.setattr(window_ops.QMessageBox, "warning", lambda *a: warnings.append(a[2]))
    cm = capture("tiny-bert")
    win = _window(qtbot, cm, BERT_ATTN)
    _drop(win, _palette_mime(qtbot, win, r=2), f"m:{BERT_ATTN}.value")
    menu = win.file_menu

    monkeypatch.setattr(window_ops.QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))  # cancelled
    _action(menu, "Save recipe").trigger()
    assert not list(tmp_path.glob("*.json")) and win.operate.session.dirty
    recipe = tmp_path / "qv.json"
    monkeypatch.setattr(window_ops.QFileDialog, "getSaveFileName", lambda *a, **k: (str(recipe), "Recipe (*.json)"))
    _action(menu, "Save recipe").trigger()
    assert json.loads(recipe.read_text())["steps"][0]["op"] == "insert" and not win.operate.session.dirty

    win2 = _window(qtbot, capture("tiny-bert"), BERT_ATTN)
    monkeypatch.setattr(window_ops.QFileDialog, "getOpenFileName", lambda *a, **k: (str(recipe), ""))
    _action(win2.file_menu, "Open recipe").trigger()
    cm2 = win2.controller.cm
    assert sorted(cm2.loras) == sorted(cm.loras) and cm2.gm.code == cm.gm.code
    assert win2.operate.stack.count() == 1

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = cm2.gm.code
    monkeypatch.setattr(window_ops.QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    _action(win2.file_menu, "Open recipe").trigger()
    assert len(warnings) == 1 and "bad.json" in warnings[0] and cm2.gm.code == code
    assert win2.operate.stack.count() == 1

    out = tmp_path / "export"
    monkeypatch.setattr(window_ops.QFileDialog, "getExistingDirectory", lambda *a, **k: "")  # cancelled
    _action(menu, "Export folder").trigger()
    assert not out.exists() and not infos
    monkeypatch.setattr(window_ops.QFileDialog, "getExistingDirectory", lambda *a, **k: str(out))
    _action(menu, "Export folder").trigger()
    assert {"model.py", "model.safetensors", "train.py", "surgery.json"} <= {p.name for p in out.iterdir()}
    assert len(infos) == 1 and "model.py" in infos[0] and "python train.py" in infos[0]
    _action(menu, "Export folder").trigger()  # the folder is not empty now: refused, said, left as it was
    assert len(warnings) == 2 and "not empty" in warnings[1] and len(infos) == 1


def test_close_with_unsaved_edits_asks(qtbot, tmp_path):
    from graphsurgeon.ui.operate.session import autosave_path

    win = _window(qtbot, capture("tiny-bert"), BERT_ATTN)
    _drop(win, _palette_mime(qtbot, win), f"m:{BERT_ATTN}.query")
    assert autosave_path().is_file()
    asked = []
    win.operate.ask = lambda *a: asked.append(a) or False
    assert not win.close() and win.isVisible() and autosave_path().is_file()  # "no": stays open, autosave kept
    win.operate.ask = lambda *a: asked.append(a) or True
    assert win.close() and not autosave_path().exists()  # "yes": closes, nothing left to recover
    assert len(asked) == 2 and "Discard" in asked[0][1]
