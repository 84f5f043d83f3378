"""Palette: a real mouse drag on the list starts a QDrag whose mime carries the spin-box values."""

from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication

from PySide6.QtCore import QMimeData

from graphsurgeon.ui.operate.palette import MIME_TYPE, Palette, decode_mime, read_mime


def _drag_item(qtbot, palette: Palette, row: int) -> None:
    lst = palette.list
    rect = lst.visualItemRect(lst.item(row))
    start = rect.center()
    qtbot.mousePress(lst.viewport(), Qt.MouseButton.LeftButton, pos=start)
    dist = QApplication.startDragDistance() + 10
    for step in range(1, 4):
        qtbot.mouseMove(lst.viewport(), start + QPoint(step * dist, step * dist // 2))
    qtbot.mouseRelease(lst.viewport(), Qt.MouseButton.LeftButton, pos=start + QPoint(3 * dist, dist))


def _shown_palette(qtbot) -> Palette:
    palette = Palette()
    qtbot.addWidget(palette)
    palette.resize(320, 400)
    palette.show()
    qtbot.waitExposed(palette)
    return palette


def test_mouse_drag_records_mime_with_spinbox_values(qtbot):
    palette = _shown_palette(qtbot)
    palette.r.setValue(4)
    palette.alpha.setValue(32.0)
    palette.dropout.setValue(0.1)
    assert palette.last_mime is None
    _drag_item(qtbot, palette, 0)
    assert palette.last_mime is not None and palette.last_mime.hasFormat(MIME_TYPE)
    data = decode_mime(palette.last_mime)
    assert data == {"kind": "add_lora", "r": 4, "alpha": 32.0, "dropout": 0.1, "every_layer": False}
    assert decode_mime(palette.last_mime, Qt.KeyboardModifier.ShiftModifier)["every_layer"] is True


def test_bare_lora_entry_and_every_layer_checkbox(qtbot):
    palette = _shown_palette(qtbot)
    palette.every_layer.setChecked(True)
    _drag_item(qtbot, palette, 1)
    data = decode_mime(palette.last_mime)
    assert data["kind"] == "lora" and data["every_layer"] is True and data["r"] == 8


def test_read_mime_ignores_foreign_data(qtbot):
    palette = Palette()
    qtbot.addWidget(palette)
    foreign = QMimeData()
    foreign.setText("hello")
    assert read_mime(foreign) is None and read_mime(None) is None
    assert read_mime(palette.mime_for("add_lora")) == palette.values("add_lora")
