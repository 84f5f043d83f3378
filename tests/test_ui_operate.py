"""The operate gesture in the window (pytest-qt, offscreen): real palette QMimeData, drops sent to the view."""

import json

import pytest
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent
from PySide6.QtWidgets import QApplication

from shared_captures import captured
from graphsurgeon.surgery import find_targets
from graphsurgeon.ui.operate.palette import MIME_TYPE as MIME
from ui_windows import shown_window

BERT_ATTN = "encoder.layer.0.attention.self"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _palette_mime(qtbot, win, row=0, every_layer=False, r=8):
    """Press, move and release the mouse on a palette row: its startDrag records the real QMimeData."""
    pal = win.operate.palette
    pal.every_layer.setChecked(every_layer)
    pal.r.setValue(r)
    lst = pal.list
    lst.last_mime = None
    center = lst.visualItemRect(lst.item(row)).center()
    vp = lst.viewport()
    far = center + QPoint(40, 30)
    for kind, pos, button, buttons in [(QMouseEvent.MouseButtonPress, center, Qt.LeftButton, Qt.LeftButton),
                                       (QMouseEvent.MouseMove, center + QPoint(5, 5), Qt.NoButton, Qt.LeftButton),
                                       (QMouseEvent.MouseMove, far, Qt.NoButton, Qt.LeftButton),
                                       (QMouseEvent.MouseButtonRelease, far, Qt.LeftButton, Qt.NoButton)]:
        ev = QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)), button, buttons, Qt.NoModifier)
        QApplication.sendEvent(vp, ev)
    mime = lst.last_mime
    assert mime is not None and mime.hasFormat(MIME)
    return mime


def _drop(win, mime, item_id):
    """Drag enter / move / drop on the viewport at the centre of the item `item_id`."""
    item = win.scene.item(item_id)
    if hasattr(item, "link_id"):  # a point on the link path itself, not its bounding rect's centre
        path = item.path()
        scene_pt = item.mapToScene(path.pointAtPercent(0.5))
    else:
        scene_pt = item.sceneBoundingRect().center()
    pos = win.view.mapFromScene(scene_pt)
    assert win.operate.id_at(pos) == item_id
    vp = win.view.viewport()
    enter = QDragEnterEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(vp, enter)
    assert enter.isAccepted()
    move = QDragMoveEvent(pos, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(vp, move)
    assert move.isAccepted()
    QApplication.sendEvent(vp, QDropEvent(QPointF(pos), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


def _inputs(cm):
    ex = cm.example_inputs
    return ex if isinstance(ex, dict) else dict(zip(cm.input_names, ex))


def test_bert_drop_query_and_value_updates_graph_table_budget(qtbot):
    cm = captured("tiny-bert")
    before = cm.run(**_inputs(cm))
    win = shown_window(qtbot, cm, BERT_ATTN)
    ops = win.operate
    budget0 = ops.budget_label.text()
    rows0 = win.table.rowCount()
    mime = _palette_mime(qtbot, win, r=4)
    assert json.loads(bytes(mime.data(MIME)).decode())["r"] == 4
    _drop(win, mime, f"m:{BERT_ATTN}.query")
    _drop(win, mime, f"m:{BERT_ATTN}.value")
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q", f"{BERT_ATTN}.lora_v"]
    assert f"m:{BERT_ATTN}.lora_q" in win.scene.blocks and f"m:{BERT_ATTN}.lora_v" in win.scene.blocks
    assert win.table.rowCount() > rows0 and ops.budget_label.text() != budget0
    trainable = 2 * 4 * (64 + 64)  # A [4, 64] + B [64, 4] on query and on value
    assert f"{ops.session.budget().trainable:,}" in ops.budget_label.text()
    assert ops.session.budget().trainable == trainable
    after = cm.run(**_inputs(cm))
    for k in before:
        torch.testing.assert_close(after[k], before[k])  # B = 0
    qtbot.waitUntil(lambda: ops.validated_version == cm.version)
    assert ops.validate_now() == [] and ops.diagnostics.count() == 0 and ops.stack.count() == 2
    assert "r=4" in ops.stack.text(0)
    ops.stack.undo()
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q"] and f"m:{BERT_ATTN}.lora_v" not in win.scene.blocks
    ops.stack.redo()
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q", f"{BERT_ATTN}.lora_v"]


def test_gpt2_every_layer_on_q_slice_one_undo(qtbot):
    cm = captured("tiny-gpt2")
    original = cm.gm.code
    t0 = find_targets(cm)[0]
    win = shown_window(qtbot, cm, t0.attention)
    ops = win.operate
    cand = ops.session.candidates(t0.attention)
    q_link = next(i for i, t in cand.items() if "->" in i and t.role == "q" and t.is_slice and win.scene.item(i))
    _drop(win, _palette_mime(qtbot, win, every_layer=True), q_link)
    n = len({t.layer for t in find_targets(cm) if t.layer is not None})
    assert n >= 2 and sorted(cm.loras) == [f"transformer.h.{i}.attn.lora_q" for i in range(n)]
    assert ops.stack.count() == 1
    ops.stack.undo()
    assert cm.loras == {} and cm.gm.code == original


def test_invalid_drops_change_nothing_and_say_why(qtbot):
    cm = captured("tiny-bert")
    original = cm.gm.code
    win = shown_window(qtbot, cm, "")
    mime = _palette_mime(qtbot, win)
    link = next(l.id for l in win.controller.view.links if l.value == "input_ids" and win.scene.item(l.id))
    _drop(win, mime, link)
    assert "input_ids" in win.operate.last_message and "integer" in win.operate.last_message
    win.navigate("encoder.layer.0.attention.output")
    ln = next(b.id for b in win.controller.view.blocks if b.subtitle == "LayerNorm")
    _drop(win, mime, ln)
    assert "LayerNorm" in win.operate.last_message
    assert cm.gm.code == original and cm.loras == {} and win.operate.stack.count() == 0


def test_edit_r_in_side_panel_revalidates_and_refuses_bad_values(qtbot):
    cm = captured("tiny-bert")
    win = shown_window(qtbot, cm, BERT_ATTN)
    ops = win.operate
    _drop(win, _palette_mime(qtbot, win, r=4), f"m:{BERT_ATTN}.query")
    path = f"{BERT_ATTN}.lora_q"
    win.scene.select([f"m:{path}"])
    assert ops.editor.r.value() == 4
    ops.editor.r.setValue(8)
    assert ops.editor.apply()
    qtbot.waitUntil(lambda: ops.validated_version == cm.version)
    assert cm.loras[path].config.r == 8 and ops.diagnostics.count() == 0
    assert ops.session.budget().trainable == 8 * (64 + 64)
    code = cm.gm.code
    win.scene.select([f"m:{path}"])
    ops.editor.r.setValue(0)
    assert not ops.editor.apply()
    assert "r must be" in ops.last_message and cm.gm.code == code
    win.scene.select([f"m:{path}"])
    assert ops.delete_selected() and cm.loras == {}


def test_recipe_save_new_window_open_gives_same_graph(qtbot, tmp_path):
    cm = captured("tiny-gpt2")
    t0 = find_targets(cm)[0]
    win = shown_window(qtbot, cm, t0.attention)
    cand = win.operate.session.candidates(t0.attention)
    v = next(i for i, t in cand.items() if t.role == "v" and t.is_slice and win.scene.item(i))
    _drop(win, _palette_mime(qtbot, win, every_layer=True, r=2), v)
    win.operate.session.save_recipe(tmp_path / "r.json")
    win2 = shown_window(qtbot, captured("tiny-gpt2"), t0.attention)
    win2.operate.open_recipe(tmp_path / "r.json")
    assert win2.controller.cm.gm.code == cm.gm.code
    assert sorted(win2.scene.blocks) == sorted(win.scene.blocks)


def test_export_from_window_runs(qtbot, tmp_path):
    cm = captured("tiny-bert")
    before = cm.run(**_inputs(cm))
    win = shown_window(qtbot, cm, BERT_ATTN)
    _drop(win, _palette_mime(qtbot, win), f"m:{BERT_ATTN}.query")
    result = win.operate.export(tmp_path / "out")
    assert "model.py" in result.files
    import importlib.util
    spec = importlib.util.spec_from_file_location("exported_model", tmp_path / "out" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.load_model(str(tmp_path / "out"))
    model.eval()
    out = model(**_inputs(cm))
    for k in before:
        torch.testing.assert_close(out[k], before[k], atol=1e-5, rtol=1e-5)


def test_autosave_of_one_model_is_offered_for_that_model_only(qtbot, tmp_path):
    """A crashed session on tiny-bert: a window on tiny-gpt2 offers nothing; opening tiny-bert (File → Open, the
    capture in the worker) offers it; File → Recover replays it as one undoable edit."""
    from graphsurgeon.ui.operate.session import EditSession, autosave_path

    crashed = EditSession(captured("tiny-bert"))
    crashed.drop(BERT_ATTN, f"m:{BERT_ATTN}.query")  # autosaves; never closed cleanly
    saved = autosave_path(crashed.cm)
    assert saved.is_relative_to(tmp_path / "cache") and saved.exists()

    win = shown_window(qtbot, captured("tiny-gpt2"), "transformer.h.0.attn")
    ops = win.operate
    recover = next(a for a in win.file_menu.actions() if a.text() == "Recover autosaved session")
    assert ops.recovery is None and not recover.isVisible() and "recover" not in ops.last_message.lower()
    recover.trigger()
    assert win.controller.cm.loras == {} and ops.stack.count() == 0

    win.open_model("tiny-bert", meta=False, path=BERT_ATTN)
    qtbot.waitUntil(lambda: win.controller.cm is not None and win.controller.cm.source_name == "tiny-bert",
                    timeout=60000)
    assert ops.recovery is not None and recover.isVisible() and "can be recovered" in ops.last_message
    recover.trigger()
    assert win.controller.cm.gm.code == crashed.cm.gm.code
    assert f"m:{BERT_ATTN}.lora_q" in win.scene.blocks and ops.stack.count() == 1 and not recover.isVisible()
    ops.stack.undo()
    assert win.controller.cm.loras == {} and f"m:{BERT_ATTN}.lora_q" not in win.scene.blocks
    assert saved.exists()  # still recoverable until the window closes cleanly


def test_undo_while_inside_the_lora_block_shows_its_parent(qtbot):
    win = shown_window(qtbot, captured("tiny-bert"), BERT_ATTN)
    _drop(win, _palette_mime(qtbot, win), f"m:{BERT_ATTN}.query")
    win.navigate(f"{BERT_ATTN}.lora_q.lora")
    assert any(b.title == "lora_A" for b in win.controller.view.blocks)
    win.operate.stack.undo()
    assert win.controller.path == BERT_ATTN and f"m:{BERT_ATTN}.query" in win.scene.blocks
