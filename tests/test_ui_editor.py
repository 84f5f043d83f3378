"""The editor window on tiny-gpt2 / tiny-bert: unbox by clicking, crumbs, table, link styles, selection, errors, export."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from graphsurgeon.ui.items import KIND_COLOURS, dash_pattern  # noqa: E402
from graphsurgeon.ui.window import MainWindow  # noqa: E402
from ui_windows import shown_window  # noqa: E402


def make(qtbot, cm, path: str = "") -> MainWindow:
    return shown_window(qtbot, cm, path)


def click_unbox(qtbot, win: MainWindow, block_id: str) -> None:
    item = win.scene.blocks[block_id]
    win.view.centerOn(item)
    scene_pt = item.mapToScene(item.unbox_rect().center())
    QTest.mouseClick(win.view.viewport(), Qt.LeftButton, Qt.NoModifier, win.view.mapFromScene(scene_pt))


@pytest.mark.parametrize("fixture, steps", [
    ("tiny_gpt2", ["transformer", "transformer.h", "transformer.h.0", "transformer.h.0.attn"]),
    ("tiny_bert", ["encoder", "encoder.layer", "encoder.layer.0", "encoder.layer.0.attention",
                   "encoder.layer.0.attention.self"]),
])
def test_unbox_by_click_then_crumb_back(qtbot, request, fixture, steps):
    cm = request.getfixturevalue(fixture)
    win = make(qtbot, cm)
    for path in steps:
        click_unbox(qtbot, win, f"m:{path}")
        assert win.controller.path == path
        assert set(win.scene.blocks) == {b.id for b in cm.blocks().view(path).blocks}
    crumbs = [p for _, p in cm.blocks().breadcrumbs(steps[-1])]
    assert [b.text().lstrip("› ") for b in win.crumb_buttons] == [label for label, _ in cm.blocks().breadcrumbs(steps[-1])]
    QTest.mouseClick(win.crumb_buttons[1], Qt.LeftButton)
    assert win.controller.path == crumbs[1]
    win.back()
    assert win.controller.path == steps[-1]


def test_table_rows_and_link_styles(qtbot, tiny_gpt2):
    win = make(qtbot, tiny_gpt2, "transformer.h.0.attn")
    view = tiny_gpt2.blocks().view("transformer.h.0.attn")
    assert win.table.shown() == [[v.name, v.producer, v.shape, v.example_shape, v.dtype] for v in view.variables]
    kinds = set()
    for link in view.links:
        pen = win.scene.links[link.id].pen()
        kinds.add(link.meta.kind)
        assert pen.color().name() == KIND_COLOURS[link.meta.kind]
        expected = [] if link.meta.rank == 0 else [6.0, 2.5] + [1.0, 2.5] * link.meta.rank
        assert [round(x, 2) for x in pen.dashPattern()] == expected if expected else pen.style() == Qt.SolidLine
    assert {"float", "bool"} <= kinds  # hidden states and the attention mask
    root = make(qtbot, tiny_gpt2, "")
    ids_link = next(l for l in root.controller.view.links if l.meta and l.meta.kind == "int")  # input_ids
    assert root.scene.links[ids_link.id].pen().color().name() == KIND_COLOURS["int"] == "#3b82f6"
    assert dash_pattern(0) == [] and len(dash_pattern(3)) == 8


def test_selection_sync(qtbot, tiny_gpt2):
    win = make(qtbot, tiny_gpt2, "transformer.h.0.attn")
    view = win.controller.view
    r = next(i for i, v in enumerate(view.variables) if v.producer.startswith("c_attn"))
    win.table.select_row(r)
    assert win.scene.selected_ids() == [win.port_block(view.variables[r].port)]
    assert "c_attn" in win.panel.toPlainText()
    win.table.clear_selection()
    win.scene.select(["m:transformer.h.0.attn.c_proj"])
    selected = win.table.selected_rows()
    assert selected == [i for i, v in enumerate(view.variables) if win.port_block(v.port) == "m:transformer.h.0.attn.c_proj"]
    assert selected


def test_capture_error_keeps_previous_model(qtbot, tiny_gpt2, monkeypatch, tmp_path):
    shown = []
    monkeypatch.setattr("graphsurgeon.ui.window.QMessageBox.warning", lambda *a: shown.append(a[2]))
    win = make(qtbot, tiny_gpt2, "transformer")
    thread = win.open_model(str(tmp_path / "no-such-folder"))
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)
    thread.join()
    assert win.controller.cm is tiny_gpt2 and win.controller.path == "transformer"
    assert len(shown) == 1 and "\n" not in shown[0] and "no-such-folder" in shown[0]


def test_open_in_worker_thread(qtbot):
    win = make(qtbot, None)
    win.open_model("tiny-bert", meta=True)
    qtbot.waitUntil(lambda: win.controller.cm is not None and bool(win.scene.blocks), timeout=60000)
    assert win.controller.cm.model_class == "BertModel"
    assert set(win.scene.blocks) == {b.id for b in win.controller.cm.blocks().view("").blocks}


def test_find_navigates_and_selects(qtbot, tiny_gpt2):
    win = make(qtbot, tiny_gpt2)
    assert win.find("transformer.h.1.attn")
    assert win.controller.path == "transformer.h.1" and win.scene.selected_ids() == ["m:transformer.h.1.attn"]


def test_blocks_remember_manual_position(qtbot, tiny_gpt2):
    win = make(qtbot, tiny_gpt2, "transformer.h.0")
    item = win.scene.blocks["m:transformer.h.0.attn"]
    item.setPos(item.pos().x() + 123, item.pos().y() - 45)
    where = (item.pos().x(), item.pos().y())
    win.navigate("transformer")
    win.back()
    assert (win.scene.blocks["m:transformer.h.0.attn"].pos().x(), win.scene.blocks["m:transformer.h.0.attn"].pos().y()) == where


def test_export_png_and_svg(qtbot, tiny_bert, tmp_path):
    from PySide6.QtGui import QImage

    win = make(qtbot, tiny_bert, "encoder.layer.0.attention.self")
    png, svg = tmp_path / "v.png", tmp_path / "v.svg"
    win.export(str(png))
    win.export(str(svg))
    img = QImage(str(png))
    assert img.width() > 300 and png.stat().st_size > 5000
    assert len({img.pixel(x, img.height() // 2) for x in range(0, img.width(), 3)}) > 3  # not blank
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and svg.stat().st_size > 5000


def test_cli_screenshot_and_bad_path(qtbot, tmp_path, capsys):
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QApplication

    from graphsurgeon.cli import main

    out = tmp_path / "shot.png"
    assert main(["edit", "tiny-gpt2", "--meta", "--path", "transformer.h.0.attn", "--screenshot", str(out)]) == 0
    img = QImage(str(out))
    assert (img.width(), img.height()) == (1600, 1000)
    for w in QApplication.topLevelWidgets():
        w.close()
    assert main(["edit", "tiny-gpt2", "--meta", "--path", "transformer.h.9", "--screenshot", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_back_up_shortcuts_and_link_tooltip(qtbot, tiny_gpt2):
    win = make(qtbot, tiny_gpt2, "transformer.h.0")
    win.activateWindow()
    win.view.setFocus()
    qtbot.waitUntil(lambda: win.isActiveWindow())
    win.navigate("transformer.h.0.attn")
    QTest.keyClick(win.view, Qt.Key_Up, Qt.AltModifier)
    assert win.controller.path == "transformer.h.0"
    QTest.keyClick(win.view, Qt.Key_Left, Qt.AltModifier)
    assert win.controller.path == "transformer.h.0.attn"
    link = win.controller.view.links[0]
    assert win.scene.links[link.id].toolTip().endswith(f"{link.meta.shape_text} {link.meta.dtype}")
