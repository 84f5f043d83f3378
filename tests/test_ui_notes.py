"""Capture notes (eager attention fallback, a sequence bound, random weights) are shown in the editor, as the CLI
prints them: in the status bar when the model is ready, in a status-bar label that stays, and in the side panel."""

from __future__ import annotations

import pytest

from graphsurgeon.capture import capture
from graphsurgeon.ui.window import capture_notes
from model_zoo import save
from ui_windows import shown_window

BLOOM_NOTE = "eager attention: transformers does not support SDPA for BloomForCausalLM"


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def test_eager_fallback_note_is_shown_when_the_model_is_ready(qtbot, tmp_path):
    folder = save("bloom", tmp_path / "bloom")  # BLOOM has no SDPA path: captured with eager attention
    win = shown_window(qtbot)
    assert win.notes_label.isHidden()
    win.open_model(folder, meta=False)
    qtbot.waitUntil(lambda: win.controller.cm is not None, timeout=180_000)
    cm = win.controller.cm
    assert cm.notes and cm.notes[0] == BLOOM_NOTE
    assert BLOOM_NOTE in win.statusBar().currentMessage()  # the "captured" message says it on model ready
    assert win.notes_label.isVisible() and win.notes_label.text().startswith("note: eager attention")
    assert f"note: {BLOOM_NOTE}" in win.notes_label.toolTip().splitlines()
    assert not win.scene.selected_ids()
    assert BLOOM_NOTE in win.panel.toPlainText()  # nothing selected when the model is ready: the panel lists the notes
    block = next(iter(win.controller.blocks()))
    win._show_panel([block])
    assert BLOOM_NOTE not in win.panel.toPlainText()  # a selected block's details replace them


def test_random_weights_note_and_a_model_without_notes(qtbot, tiny_gpt2):
    win = shown_window(qtbot, tiny_gpt2)  # a preset without published weights: random
    assert capture_notes(tiny_gpt2) == [tiny_gpt2.weights_note] and "random weights" in tiny_gpt2.weights_note
    assert win.notes_label.isVisible() and "random weights" in win.notes_label.text()
    assert "random weights" in win.panel.toPlainText()  # the first screen's side panel says it, nothing selected
    import torch

    plain = capture(torch.nn.Sequential(torch.nn.Linear(4, 4)), example_inputs={"input": torch.randn(2, 4)})
    assert capture_notes(plain) == []
    win.controller.set_model(plain)
    win.refresh()
    assert win.notes_label.isHidden() and win.notes_label.toolTip() == "" and win.panel.toPlainText() == ""
