"""The canvas (pytest-qt, offscreen, 1600×1000): every composite fits legibly, labels never collide, links go around
blocks, the fused q/v links glow during a real palette drag, edits leave the other blocks where they were."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDragMoveEvent, QMouseEvent
from PySide6.QtWidgets import QApplication

from shared_captures import captured
from graphsurgeon.ui.items import TITLE_MIN_PX
from graphsurgeon.ui.operate.palette import MIME_TYPE
from graphsurgeon.ui.window import MainWindow
from surgery_models import shared
from ui_windows import shown_window

ATTN = "transformer.h.0.attn"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _window(qtbot, cm, path: str = "") -> MainWindow:
    win = shown_window(qtbot, cm, path)
    win.view.fit()
    return win


def _crossed_blocks(win) -> list[tuple[str, str]]:
    """(link, block) pairs where a point sampled on the link's drawn path lies inside a block it does not connect."""
    inner = {b: it.sceneBoundingRect().adjusted(9, 9, -9, -9) for b, it in win.scene.blocks.items()}  # the block itself
    bad = []
    for lid, li in win.scene.links.items():
        path = li.path()
        for k in range(1, 80):
            p = li.mapToScene(path.pointAtPercent(k / 80))
            hit = next((b for b, r in inner.items() if b not in (li.src.block_id, li.dst.block_id) and r.contains(p)), None)
            if hit:
                bad.append((lid, hit))
                break
    return bad


def _label_overlaps(win) -> list[tuple[str, str]]:
    """Pairs of port labels whose rectangles overlap; a label running out of its block counts as overlapping it."""
    rects = []
    for bid, item in win.scene.blocks.items():
        inside = QRectF(0, 0, item.w, item.h)
        rects += [(bid, item.mapRectToScene(r)) for r in item.label_rects()]
        rects += [(bid, "cut") for r in item.label_rects() if not inside.contains(r)]
    if any(r == "cut" for _, r in rects):
        return [(b, "cut") for b, r in rects if r == "cut"]
    return [(a, b) for i, (a, ra) in enumerate(rects) for b, rb in rects[i + 1:] if ra.intersected(rb).width() > 0.5
            and ra.intersected(rb).height() > 0.5]


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_every_composite_opens_whole_legible_untangled(qtbot, request, arch):
    cm = {"gpt2": lambda: request.getfixturevalue("tiny_gpt2"), "bert": lambda: request.getfixturevalue("tiny_bert"),
          "llama": lambda: shared("llama")}[arch]()
    win = _window(qtbot, cm)
    viewport = QRectF(win.view.viewport().rect())
    for path in cm.blocks().paths():
        win.navigate(path)
        scale = win.view.transform().m11()
        for bid, item in win.scene.blocks.items():
            on_screen = win.view.mapFromScene(item.mapRectToScene(QRectF(0, 0, item.w, item.h))).boundingRect()
            assert viewport.contains(QRectF(on_screen)), (path, bid)
            assert item.title_px(scale) * scale >= TITLE_MIN_PX, (path, bid)
        assert _label_overlaps(win) == [], path
        assert _crossed_blocks(win) == [], path


def test_titles_keep_their_drawn_size_where_the_view_fits_at_readable_scale(qtbot, tiny_gpt2):
    """Attention, the view a person edits most, opens at a scale where titles need no enlarging (≥ 10 px as drawn)."""
    win = _window(qtbot, tiny_gpt2, ATTN)
    from graphsurgeon.ui.items import TITLE_PX

    scale = win.view.transform().m11()
    assert TITLE_PX * scale >= TITLE_MIN_PX
    assert all(item.title_px(scale) == TITLE_PX for item in win.scene.blocks.values())


def _palette_mime(win, row: int = 0):
    """A real press / move / release on a palette row: its startDrag records the QMimeData it drags."""
    lst = win.operate.palette.list
    lst.last_mime = None
    vp = lst.viewport()
    center = lst.visualItemRect(lst.item(row)).center()
    far = center + QPoint(40, 30)
    for kind, pos, button, buttons in [(QMouseEvent.MouseButtonPress, center, Qt.LeftButton, Qt.LeftButton),
                                       (QMouseEvent.MouseMove, center + QPoint(5, 5), Qt.NoButton, Qt.LeftButton),
                                       (QMouseEvent.MouseMove, far, Qt.NoButton, Qt.LeftButton),
                                       (QMouseEvent.MouseButtonRelease, far, Qt.LeftButton, Qt.NoButton)]:
        QApplication.sendEvent(vp, QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)), button, buttons,
                                               Qt.NoModifier))
    assert lst.last_mime is not None and lst.last_mime.hasFormat(MIME_TYPE)
    return lst.last_mime


def _on_link(win, link_id: str) -> QPoint:
    li = win.scene.links[link_id]
    return win.view.mapFromScene(li.mapToScene(li.path().pointAtPercent(0.5)))


def _slice_link(win, fx_value: str) -> str:
    return next(l.id for l in win.controller.view.links if l.value == fx_value and l.src.startswith("n:split/"))


def test_fused_q_and_v_links_glow_tagged_during_a_real_palette_drag(qtbot, tiny_gpt2):
    from graphsurgeon.surgery import find_targets

    win = _window(qtbot, tiny_gpt2, ATTN)
    mime = _palette_mime(win, 0)
    vp = win.view.viewport()
    targets = {t.role: t.target_node for t in find_targets(tiny_gpt2) if t.attention == ATTN}
    q_link, v_link = _slice_link(win, targets["q"]), _slice_link(win, targets["v"])
    at = _on_link(win, q_link)
    enter = QDragEnterEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(vp, enter)
    assert enter.isAccepted()
    scene = win.scene
    assert scene.links[q_link].state == "target" and scene.links[q_link].tag == "q"
    assert scene.links[v_link].state == "target" and scene.links[v_link].tag == "v"
    assert {b.text for b in scene.tags.values()} >= {"q", "v"}
    sdpa = next(b for b in win.controller.view.blocks if b.role == "attention")  # the attention core
    assert scene.blocks[sdpa.id].state == "dim"
    assert scene.blocks[f"m:{ATTN}.c_attn"].state == "target"  # the whole fused projection is a target too
    move = QDragMoveEvent(at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(vp, move)
    assert move.isAccepted() and scene.links[q_link].state == "hover" and scene.note is None
    bad_at = win.view.mapFromScene(scene.blocks[sdpa.id].sceneBoundingRect().center())
    QApplication.sendEvent(vp, QDragMoveEvent(bad_at, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    assert scene.blocks[sdpa.id].state == "bad"
    assert scene.note is not None and scene.note.text.startswith("not here: ") and len(scene.note.text) > 30
    assert scene.note.isVisible() and scene.note.scene() is scene
    QApplication.sendEvent(vp, QDragLeaveEvent())
    assert scene.note is None and not scene.tags
    assert all(i.state is None for i in list(scene.blocks.values()) + list(scene.links.values()))


def _positions(win) -> dict[str, tuple[float, float]]:
    return {b: (it.pos().x(), it.pos().y()) for b, it in win.scene.blocks.items()}


def _sizes(win) -> dict[str, tuple[float, float]]:
    return {b: (it.w, it.h) for b, it in win.scene.blocks.items()}


def test_insert_undo_redo_keep_every_other_block_still_and_the_view_put(qtbot):
    cm = captured("tiny-gpt2")
    win = _window(qtbot, cm, ATTN)
    before, sizes = _positions(win), _sizes(win)
    centre = win.view.mapToScene(win.view.viewport().rect().center())
    payload = {"kind": "add_lora", "r": 8, "alpha": 16.0, "dropout": 0.0}
    assert win.operate.drop(_slice_link(win, "getitem"), payload)
    after, sizes_after = _positions(win), _sizes(win)
    new = set(after) - set(before)
    assert len(new) == 1
    # the split's q output is renamed (query_states → query_states_base) and so wider: it may grow in place;
    # every block whose size did not change stays exactly where it was
    untouched = [b for b in before if b in after and sizes[b] == sizes_after[b]]
    assert len(untouched) >= len(before) - 2
    assert {b: after[b] for b in untouched} == {b: before[b] for b in untouched}
    assert win.view.mapToScene(win.view.viewport().rect().center()) == centre  # the view did not jump
    lora = win.scene.blocks[new.pop()]
    box = lora.sceneBoundingRect().adjusted(8, 8, -8, -8)
    assert not any(box.intersects(it.sceneBoundingRect().adjusted(8, 8, -8, -8))
                   for b, it in win.scene.blocks.items() if it is not lora)
    assert _crossed_blocks(win) == []
    assert lora.lora and lora.geom.badge == f"LoRA r=8 α=16 · {8 * (64 + 64):,} params"
    win.operate.stack.undo()
    assert _positions(win) == before
    win.operate.stack.redo()
    assert _positions(win) == after


def test_diagnostics_mark_the_block_wrap_stay_and_navigate(qtbot):
    cm = captured("tiny-gpt2")
    win = _window(qtbot, cm, ATTN)
    payload = {"kind": "lora", "r": 8, "alpha": 16.0, "dropout": 0.0}  # a bare LoRA Layer, not wired yet
    assert win.operate.drop(_slice_link(win, "getitem"), payload)
    problems = win.operate.validate_now()
    assert problems and win.operate.diagnostics.wordWrap()
    bare = next(b for b in win.scene.blocks.values() if b.lora and "not wired" in b.geom.badge)
    assert bare.problem and bare._problem_icon is not None and bare._problem_icon.toolTip() == bare.problem
    win.navigate("transformer.h.0")
    win.navigate(ATTN)  # marks come back with the rebuilt items, the row stays
    assert win.scene.blocks[bare.block_id].problem and win.operate.diagnostics.count() == len(problems)
    row = win.operate.diagnostics.item(0)
    win.operate.diagnostics.jump(row)
    node = row.data(Qt.UserRole)
    assert win.controller.path != ATTN
    sel = win.scene.selected_ids()
    assert len(sel) == 1 and (sel[0] == f"n:{node}" or any(
        link.value == node and link.src.startswith(sel[0] + "/") for link in win.controller.view.links))
