"""The Code panel: the open composite as model.py writes it; block selection <-> highlighted lines; edits show."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from shared_captures import captured  # noqa: E402
from graphsurgeon.surgery import LoRAConfig, add_lora  # noqa: E402
from graphsurgeon.ui.window import MainWindow  # noqa: E402
from ui_windows import shown_window  # noqa: E402


def make(qtbot, cm, path: str) -> MainWindow:
    win = shown_window(qtbot, cm, path)
    win.code_dock.raise_()  # its tab in front (the block panel is, by default)
    qtbot.waitUntil(lambda: win.code_panel.code is not None and win.code_panel.code.path == path, timeout=10000)
    return win


def highlighted(panel) -> list[int]:
    return sorted(s.cursor.blockNumber() for s in panel.extraSelections())


def line_of(panel, text: str) -> int:
    return next(i for i, line in enumerate(panel.toPlainText().splitlines()) if text in line)


def test_hidden_tab_costs_nothing(qtbot):
    """Behind its tab the panel writes no code; brought to the front it shows the open composite."""
    cm = captured("tiny-gpt2")
    win = shown_window(qtbot, cm, "transformer.h.0.mlp")
    qtbot.wait(300)
    assert win.code_panel.code is None and not win.code_panel.shown()
    win.code_dock.raise_()
    qtbot.waitUntil(lambda: win.code_panel.code is not None, timeout=10000)
    assert win.code_panel.toPlainText().startswith("class GPT2MLP(nn.Module):")


def test_shows_the_composite_and_follows_selection_both_ways(qtbot):
    cm = captured("tiny-gpt2")
    win = make(qtbot, cm, "transformer.h.0.attn")
    panel = win.code_panel
    text = panel.toPlainText()
    assert text.startswith("class GPT2Attention(nn.Module):") and "torch.ops" not in text

    win.scene.select(["m:transformer.h.0.attn.c_proj"])  # a block selected on the canvas -> its lines
    lines = [panel.toPlainText().splitlines()[i] for i in highlighted(panel)]
    assert any("self.c_proj(" in line for line in lines) and any("Conv1D(" in line for line in lines)

    row = line_of(panel, "attention_interface(")  # a line clicked -> its block selected on the canvas
    panel.setFocus()
    rect = panel.cursorRect(_cursor_at(panel, row))
    QTest.mouseClick(panel.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())
    assert win.scene.selected_ids() == ["m:transformer.h.0.attn.attention_interface"]

    win.navigate("transformer.h.0.attn.attention_interface")  # a function group is its function
    qtbot.waitUntil(lambda: panel.code.path == "transformer.h.0.attn.attention_interface", timeout=10000)
    assert panel.toPlainText().startswith("def attention_interface(")
    sdpa = next(b.id for b in win.controller.view.blocks if "scaled_dot_product_attention" in b.id)
    win.scene.select([sdpa])
    assert any("F.scaled_dot_product_attention(" in panel.toPlainText().splitlines()[i] for i in highlighted(panel))


def test_an_edit_shows_in_the_code(qtbot):
    cm = captured("tiny-gpt2")
    win = make(qtbot, cm, "transformer.h.0.attn")
    panel = win.code_panel
    assert "self.c_attn.q" not in panel.toPlainText()
    add_lora(cm, roles=("q",), layers="0", config=LoRAConfig(r=2, alpha=4))
    win.refresh(fit=False)
    qtbot.waitUntil(lambda: "self.c_attn.q(" in panel.toPlainText(), timeout=10000)
    win.scene.select(["m:transformer.h.0.attn.lora_q"])
    assert any("self.c_attn.q(" in panel.toPlainText().splitlines()[i] for i in highlighted(panel))


def _cursor_at(panel, row: int):
    from PySide6.QtGui import QTextCursor

    return QTextCursor(panel.document().findBlockByNumber(row))
