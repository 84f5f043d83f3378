"""The editor's panels (pytest-qt, offscreen): the LoRA panel inside a LoRA block and across undo/redo, side panels
that keep their widths, the shape table, the minimap."""

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QDockWidget, QHeaderView

from shared_captures import captured
from graphsurgeon.ui.shape_table import OP, example_numel
from test_ui_operate import _drop, _palette_mime
from ui_windows import shown_window
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
    cm = captured("tiny-gpt2")
    win = shown_window(qtbot, cm, ATTN)
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


def _click_header(qtbot, table, column: int) -> None:
    header = table.view.horizontalHeader()
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    qtbot.mouseClick(header.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(x, header.height() // 2))


def _click_row(qtbot, table, shown_row: int) -> None:
    rect = table.view.visualRect(table.proxy.index(shown_row, 0))
    qtbot.mouseClick(table.view.viewport(), Qt.LeftButton, Qt.NoModifier, rect.center())


def _columns_fill(table) -> bool:
    header = table.view.horizontalHeader()
    return (header.sectionResizeMode(OP) == QHeaderView.Stretch
            and sum(header.sectionSize(c) for c in range(header.count())) == header.viewport().width())


def test_shape_table_all_rows_sort_filter_selection_both_ways_and_stretch(qtbot):
    cm = captured("tiny-gpt2")
    win = shown_window(qtbot, cm, ATTN)
    win.resize(1600, 1000)
    qtbot.waitExposed(win)
    table, view = win.table, win.controller.view
    graph_order = [[v.name, v.producer, v.shape, v.example_shape, v.dtype] for v in view.variables]
    assert table.rowCount() == len(view.variables) and table.shown() == graph_order
    renamed = next(r for r, v in enumerate(view.variables) if v.value and v.value != v.name)  # a semantic name
    tip = table.proxy.index(renamed, 0).data(Qt.ToolTipRole)
    assert view.variables[renamed].name in tip and tip.endswith(f"fx node: {view.variables[renamed].value}")
    rows_seen = table.view.viewport().height() // table.view.verticalHeader().defaultSectionSize()
    assert rows_seen >= 10, rows_seen  # a table area, not a strip of ~5 rows
    assert _columns_fill(table)

    _click_header(qtbot, table, 3)  # example shape: by element count, ascending, then descending, then graph order
    sizes = [example_numel(r[3]) for r in table.shown()]
    assert sizes == sorted(sizes) and table.shown() != graph_order
    _click_header(qtbot, table, 3)
    assert [example_numel(r[3]) for r in table.shown()] == sorted(sizes, reverse=True)
    _click_header(qtbot, table, 3)
    assert table.shown() == graph_order
    _click_header(qtbot, table, 0)
    assert [r[0] for r in table.shown()] == sorted((r[0] for r in graph_order), key=str.lower)

    qtbot.keyClicks(table.filter, "BOOL")  # every column is searched, case-insensitive
    assert table.shown() and all(r[4] == "bool" for r in table.shown())
    assert len(table.shown()) == sum(r[4] == "bool" for r in graph_order)
    table.filter.clear()
    qtbot.keyClicks(table.filter, "split float32")  # every word must match
    assert table.shown() and all(r[1] == "split" and r[4] == "float32" for r in table.shown())

    _click_row(qtbot, table, 1)  # table → canvas: the block that produces the value
    [row] = table.selected_rows()
    assert win.scene.selected_ids() == [win.port_block(view.variables[row].port)] == ["n:split"]
    table.filter.clear()
    c_proj = f"m:{ATTN}.c_proj"
    win.scene.select([c_proj])  # canvas → table: every row the block produces, shown in the table
    expected = [i for i, v in enumerate(view.variables) if win.port_block(v.port) == c_proj]
    assert expected and table.selected_rows() == expected

    sort_column = table.view.horizontalHeader().sortIndicatorSection()
    q = next(i for i, t in win.operate.session.candidates(ATTN).items() if t.role == "q" and i in win.scene.links)
    _drop(win, _palette_mime(qtbot, win, r=2), q)  # an edit refills the table: more rows, same sort, same stretch
    assert table.rowCount() == len(win.controller.view.variables) > len(graph_order)
    assert table.view.horizontalHeader().sortIndicatorSection() == sort_column == 0
    assert [r[0] for r in table.shown()] == sorted((r[0] for r in table.shown()), key=str.lower)
    assert _columns_fill(table)
    win.operate.stack.undo()
    assert table.rowCount() == len(graph_order) and _columns_fill(table)


def _view_center(win) -> QPointF:
    return win.view.mapToScene(win.view.viewport().rect().center())


def test_minimap_shows_only_when_the_view_does_not_fit_and_pans_by_click_and_drag(qtbot, tiny_gpt2):
    win = shown_window(qtbot, tiny_gpt2, ATTN)
    win.resize(1600, 1000)
    qtbot.waitExposed(win)
    mini, view = win.minimap, win.view
    view.fitInView(win.scene.itemsBoundingRect().adjusted(-30, -30, 30, 30), Qt.KeepAspectRatio)
    qtbot.wait(150)  # longer than the minimap's render delay
    assert not mini.needed() and not mini.isVisible()

    view.resetTransform()
    view.scale(2.5, 2.5)  # zoomed in: the view shows a part of the composite
    view.centerOn(win.scene.itemsBoundingRect().topLeft())
    qtbot.waitUntil(mini.isVisible)
    assert view.viewport().rect().contains(mini.geometry())  # in the graph view's corner
    bar = view.verticalScrollBar()
    bar.setValue(bar.value() + 40)  # panned from elsewhere: it steps aside (the scroll repaints only the strip)...
    assert not mini.isVisible()
    qtbot.waitUntil(mini.isVisible)  # ... and comes back when the panning pauses
    shown = mini.viewport_rect()  # the viewport's rectangle: a part of the overview
    assert shown.intersects(QRectF(mini.rect())) and shown.width() < mini.width() and shown.height() < mini.height()

    blocks = sorted(win.scene.blocks.values(), key=lambda it: it.sceneBoundingRect().center().x())
    a, b = (blocks[len(blocks) // 3].sceneBoundingRect().center(), blocks[2 * len(blocks) // 3].sceneBoundingRect().center())
    to_mini = lambda p: QPoint(round((p.x() - mini._source.x()) * mini._scale), round((p.y() - mini._source.y()) * mini._scale))
    tolerance = 1.5 / mini._scale  # a minimap pixel in scene units, rounded
    qtbot.mouseClick(mini, Qt.LeftButton, Qt.NoModifier, to_mini(a))  # click: the view jumps there
    assert (_view_center(win) - a).manhattanLength() <= 2 * tolerance
    assert mini.viewport_rect().contains(QPointF(to_mini(a)))
    for kind, pos, buttons in [(QEvent.MouseButtonPress, to_mini(a), Qt.LeftButton),  # drag: the view follows
                               (QEvent.MouseMove, (to_mini(a) + to_mini(b)) / 2, Qt.LeftButton),
                               (QEvent.MouseMove, to_mini(b), Qt.LeftButton),
                               (QEvent.MouseButtonRelease, to_mini(b), Qt.NoButton)]:
        button = Qt.NoButton if kind == QEvent.MouseMove else Qt.LeftButton
        QApplication.sendEvent(mini, QMouseEvent(kind, QPointF(pos), QPointF(mini.mapToGlobal(pos)), button, buttons,
                                                 Qt.NoModifier))
    assert (_view_center(win) - b).manhattanLength() <= 2 * tolerance

    view.fitInView(win.scene.itemsBoundingRect().adjusted(-30, -30, 30, 30), Qt.KeepAspectRatio)
    qtbot.waitUntil(lambda: not mini.isVisible())
