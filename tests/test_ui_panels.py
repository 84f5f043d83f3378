"""The editor's panels (pytest-qt, offscreen): the LoRA panel inside a LoRA block and across undo/redo, side panels
that keep their widths, the shape table, the minimap."""

import pytest
from PySide6.QtWidgets import QDockWidget

from graphsurgeon.capture import capture
from test_ui_operate import _drop, _palette_mime, _window
from test_ui_operate_keys import _click_block

ATTN = "transformer.h.0.attn"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _dock_widths(win) -> dict[str, int]:
    return {d.windowTitle(): d.width() for d in win.findChildren(QDockWidget)
            if d.isVisible() and d.windowTitle() not in ("Shapes", "Diagnostics")}


def _shown(panel) -> tuple:
    return panel.isEnabled(), panel.r.value(), panel.alpha.value()


def test_lora_panel_works_inside_the_block_follows_undo_and_panels_keep_their_widths(qtbot):
    cm = capture("tiny-gpt2")
    win = _window(qtbot, cm, ATTN)
    win.resize(1600, 1000)
    qtbot.waitExposed(win)
    ops, panel = win.operate, win.operate.editor
    widths = _dock_widths(win)
    q = next(i for i, t in ops.session.candidates(ATTN).items() if t.role == "q" and i in win.scene.links)
    _drop(win, _palette_mime(qtbot, win, row=1, r=4), q)  # the bare LoRA Layer: its panel text is the longest
    path = f"{ATTN}.lora_q"
    assert path in cm.loras and _shown(panel) == (False, 0, 0.0)  # nothing selected, not inside: empty
    _click_block(qtbot, win, f"m:{path}")
    assert _shown(panel) == (True, 4, 16.0) and "not connected" in panel.title.text()
    _click_block(qtbot, win, f"m:{ATTN}.c_attn")  # any other block: the panels stay as wide as they were
    assert _dock_widths(win) == widths

    win.navigate(path)  # inside the block, nothing selected: the block you are in is the one edited
    assert win.scene.selected_ids() == [] and _shown(panel) == (True, 4, 16.0)
    panel.r.setValue(2)
    panel.alpha.setValue(8.0)
    assert panel.apply() and cm.loras[path].config.r == 2 and _shown(panel) == (True, 2, 8.0)
    assert _dock_widths(win) == widths
    ops.stack.undo()  # the panel follows: no stale values
    assert cm.loras[path].config.r == 4 and win.controller.path == path and _shown(panel) == (True, 4, 16.0)
    ops.stack.redo()
    assert _shown(panel) == (True, 2, 8.0)
    ops.stack.undo()
    ops.stack.undo()  # the block itself is gone: the view shows its parent and the panel empties
    assert path not in cm.loras and win.controller.path == ATTN and _shown(panel) == (False, 0, 0.0)
    ops.stack.redo()
    win.navigate(path)
    assert _shown(panel) == (True, 4, 16.0)
    assert ops.delete_selected() and path not in cm.loras and win.controller.path == ATTN  # Delete inside too
    assert _dock_widths(win) == widths
