"""Cancel in the status bar stops an open: what was shown before comes back at once (or the empty window), the worker
stops at its next step, and nothing is left behind (no cached views or module tree, no half capture shown)."""

import threading

import pytest
from PySide6.QtCore import Qt

import graphsurgeon.capture
from graphsurgeon.capture import capture as real_capture
from ui_windows import shown_window


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def held_capture(monkeypatch):
    """The worker's capture waits at `gate` (so Cancel comes while torch.export would run), then runs the real one."""
    entered, gate = threading.Event(), threading.Event()

    def capture(*args, **kwargs):
        entered.set()
        assert gate.wait(60)
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(graphsurgeon.capture, "capture", capture)
    return entered, gate


def _cancel_during_capture(qtbot, win, held):
    """Open tiny-gpt2, press Cancel while its capture runs, let the worker go on: the open's number."""
    entered, gate = held
    thread = win.open_model("tiny-gpt2", meta=True)
    number = win.opener.number
    assert entered.wait(60)
    qtbot.waitUntil(lambda: "torch.export" in win.progress_label.text())
    assert win.cancel_button.isVisible() and win.progress.isVisible()  # in the status bar, beside the stage
    assert win.statusBar().isAncestorOf(win.cancel_button) and win.statusBar().isAncestorOf(win.progress)
    assert win.controller.preview is not None  # the shipped module tree painted meanwhile
    qtbot.mouseClick(win.cancel_button, Qt.LeftButton)
    assert not win.cancel_button.isVisible() and not win.progress.isVisible() and not win.progress_label.isVisible()
    assert "cancelled" in win.statusBar().currentMessage()
    state = (win.controller.cm, win.controller.preview, win.windowTitle(), win.table.rowCount(), len(win.scene.blocks))
    gate.set()
    thread.join(60)
    assert not thread.is_alive() and win.opener.stopped == [number]  # stopped at its next step, not finished
    qtbot.wait(50)  # anything the worker still signalled is delivered (and dropped)
    assert (win.controller.cm, win.controller.preview, win.windowTitle(), win.table.rowCount(),
            len(win.scene.blocks)) == state
    return state


def test_cancel_brings_back_the_model_shown_before(qtbot, cache, held_capture, tiny_bert):
    win = shown_window(qtbot, tiny_bert)
    shown = lambda: (win.windowTitle(), win.table.rowCount(), sorted(win.scene.blocks),  # noqa: E731
                     [b.text() for b in win.crumb_buttons])
    before = shown()
    _cancel_during_capture(qtbot, win, held_capture)
    assert win.controller.cm is tiny_bert and win.controller.preview is None
    assert shown() == before and before[1] > 0
    assert not [p for p in cache.rglob("*") if p.is_file()]  # no view snapshot, tree or temp file written


def test_cancel_of_a_first_open_leaves_the_empty_window(qtbot, cache, held_capture):
    win = shown_window(qtbot)
    _cancel_during_capture(qtbot, win, held_capture)
    assert win.controller.shown is None and not win.scene.items() and not win.crumb_buttons
    assert win.table.rowCount() == 0 and win.windowTitle() == "graphsurgeon"
    assert not win.opener.cancel()  # nothing left to cancel
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_export_runs_in_the_background_and_cancel_leaves_nothing(qtbot, cache, tmp_path, tiny_gpt2, monkeypatch):
    from graphsurgeon.export import verify

    entered, gate, real_check = threading.Event(), threading.Event(), verify.static_check

    def held_check(folder):  # the self-check waits until Cancel was pressed: the export is stopped after it
        entered.set()
        assert gate.wait(60)
        return real_check(folder)

    monkeypatch.setattr(verify, "static_check", held_check)
    win = shown_window(qtbot, tiny_gpt2)
    task = win.operate.export_task
    task.dialogs = False
    stages = []
    task.signals.stage.connect(stages.append)
    out = tmp_path / "exports" / "gpt2-lora"
    out.parent.mkdir()
    thread = task.start(out)
    assert win.cancel_button.isVisible() and win.progress.isVisible() and "exporting" in win.progress_label.text()
    assert not win.operate.live() and not win.operate.drop("n:anything", {"r": 8, "alpha": 16, "dropout": 0})
    assert not win.operate.history_view.isEnabled() and not any(a.isEnabled() for a in win.operate.undo_actions)
    assert entered.wait(60)
    qtbot.waitUntil(lambda: "self-check" in win.progress_label.text())
    qtbot.mouseClick(win.cancel_button, Qt.LeftButton)
    assert "cancelling" in win.progress_label.text()
    gate.set()
    thread.join(120)
    qtbot.waitUntil(lambda: not task.running)
    assert task.outcome == "cancelled" and "nothing was written" in win.operate.last_message
    assert not win.cancel_button.isVisible() and not win.progress.isVisible()
    assert list(out.parent.iterdir()) == []  # no folder, no temp folder, no lock left
    assert win.operate.live() and win.operate.history_view.isEnabled()  # editing is back
    assert any("writing model.py" in s for s in stages) and not any("moving the folder" in s for s in stages)
    # an export written in the background to the end: test_ui_operate_keys' File → Export folder test


def test_cancel_discards_the_drops_queued_on_the_preview_and_keeps_the_history_shown_before(qtbot, cache,
                                                                                            held_capture):
    from shared_captures import captured

    bert = captured("tiny-bert")
    win = shown_window(qtbot, bert)
    ops = win.operate
    win.navigate("encoder.layer.0.attention.self")
    target = next(iter(ops.session.candidates("encoder.layer.0.attention.self")))
    assert ops.drop(target, {"r": 2, "alpha": 4, "dropout": 0.0}) and ops.stack.count() == 1
    entered, gate = held_capture
    thread = win.open_model("tiny-gpt2", meta=True, path="transformer.h.0.attn")
    assert ops.drop("m:transformer.h.0.attn.c_attn", {"r": 2, "alpha": 4, "dropout": 0.0})
    assert ops.undo_group.activeStack() is ops.queue.stack  # Ctrl-Z now takes back queued drops, not bert's edit
    assert entered.wait(60)
    qtbot.mouseClick(win.cancel_button, Qt.LeftButton)
    assert "1 queued drop(s) discarded: the open was cancelled" in win.statusBar().currentMessage()
    assert win.controller.cm is bert and len(bert.loras) == 1 and not ops.queue.drops
    assert ops.undo_group.activeStack() is ops.stack and ops.stack.count() == 1  # bert's History, untouched
    gate.set()
    thread.join(60)
    ops.undo_actions[0].trigger()
    assert not bert.loras
