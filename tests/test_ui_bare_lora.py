"""The bare "LoRA Layer" in the window: drop it from the palette, then draw a wire from its output with the mouse."""

import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from shared_captures import captured
from test_bare_lora import fused_output
from test_ui_operate import _drop, _palette_mime
from ui_windows import shown_window

ATTN = "transformer.h.0.attn"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _mouse(win, kind, pos: QPoint, buttons) -> None:
    vp = win.view.viewport()
    button = Qt.LeftButton if kind != QMouseEvent.MouseMove else Qt.NoButton
    QApplication.sendEvent(vp, QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)), button, buttons,
                                           Qt.NoModifier))


def _draw_wire(win, from_port: str, to_item: str) -> None:
    """Press on the output dot of `from_port`, move, and release over the item `to_item` (a link's midpoint)."""
    owner = win.scene.blocks[win.port_block(from_port)]
    start = win.view.mapFromScene(owner.port_pos(from_port))
    item = win.scene.item(to_item)
    end_scene = item.mapToScene(item.path().pointAtPercent(0.5)) if hasattr(item, "link_id") else \
        item.sceneBoundingRect().center()
    end = win.view.mapFromScene(end_scene)
    _mouse(win, QMouseEvent.MouseButtonPress, start, Qt.LeftButton)
    assert win.scene.wiring
    _mouse(win, QMouseEvent.MouseMove, (start + end) / 2, Qt.LeftButton)
    _mouse(win, QMouseEvent.MouseMove, end, Qt.LeftButton)
    _mouse(win, QMouseEvent.MouseButtonRelease, end, Qt.NoButton)
    assert not win.scene.wiring


def test_drop_bare_lora_then_wire_its_output_onto_q(qtbot):
    cm = captured("tiny-gpt2")
    win = shown_window(qtbot, cm, ATTN)
    session = win.operate.session
    q_link = next(i for i, t in session.candidates(ATTN).items() if t.role == "q" and i in win.scene.links)
    _drop(win, _palette_mime(qtbot, win, row=1, r=2), q_link)  # row 1: "LoRA Layer" (the bare branch)
    path = f"{ATTN}.lora_q"
    block = cm.loras[path]
    assert block.kind == "bare" and block.wired_to is None
    assert any("not connected" in str(d) for d in win.operate.validate_now())  # listed in the diagnostics panel
    assert win.operate.diagnostics.count() == 1
    win.scene.select([f"m:{path}"])
    assert "not connected" in win.operate.editor.title.text()  # the side panel says what is left to do

    out_port = win.scene.blocks[f"m:{path}"].block.outputs[0].id
    q_link = next(l for l in win.controller.view.links if l.value == block.target.target_node
                  and not l.src.startswith(f"m:{path}"))
    bad_link = next(l for l in win.controller.view.links if l.value == fused_output(cm))  # c_attn's fused [batch, seq, 192]
    with torch.no_grad():  # non-zero B, so the wire visibly changes the outputs
        cm.gm.get_submodule(path).lora_B.weight.normal_()
    before = cm.run(**cm.example_inputs)["logits"].clone()

    _draw_wire(win, out_port, bad_link.id)  # the wrong shape: refused, nothing changes
    assert cm.loras[path].wired_to is None and "another shape" in win.operate.last_message

    _draw_wire(win, out_port, q_link.id)
    assert cm.loras[path].wired_to == block.target.target_node
    assert win.operate.stack.undoText() == f"Connect {path} onto {block.target.target_node}"
    assert win.operate.validate_now() == [] and win.operate.diagnostics.count() == 0
    win.scene.select([f"m:{path}"])
    assert f"added onto {block.target.target_node}" in win.operate.editor.title.text()
    after = cm.run(**cm.example_inputs)["logits"]
    assert (after - before).abs().max() > 1e-4
    win.operate.stack.undo()
    assert cm.loras[path].wired_to is None and torch.equal(cm.run(**cm.example_inputs)["logits"], before)


def test_wire_from_an_ordinary_output_says_why(qtbot):
    cm = captured("tiny-gpt2")
    win = shown_window(qtbot, cm, ATTN)
    split = win.controller.view.find("split")
    target = next(l for l in win.controller.view.links if l.src != split.outputs[0].id)
    code = cm.gm.code
    _draw_wire(win, split.outputs[0].id, target.id)
    assert "only a bare LoRA Layer" in win.operate.last_message and cm.gm.code == code
