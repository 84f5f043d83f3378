"""Opening a model paints its cached views at once, read-only, and swaps in the live capture when it arrives."""

import json
import threading

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QDragEnterEvent
from PySide6.QtWidgets import QApplication

import graphsurgeon.capture
from graphsurgeon.capture import build_model
from graphsurgeon.capture import capture as real_capture
from graphsurgeon.capture.module_trees import CACHED, known_tree
from graphsurgeon.capture.preset_trees import shipped_tree
from graphsurgeon.capture.presets import load_preset
from graphsurgeon.capture.view_cache import cache_key, load_views, store_views
from graphsurgeon.errors import CaptureError
from graphsurgeon.graph.gc_pause import pausing
from graphsurgeon.graph.module_tree import module_tree_data
from graphsurgeon.graph.snapshot import take_snapshot
from graphsurgeon.ui.layout import layered
from graphsurgeon.ui.window import MainWindow
from test_ui_operate import _palette_mime
from ui_windows import shown_window

ATTN = "transformer.h.0.attn"


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def gated_capture(monkeypatch):
    """The worker's capture waits for `gate.set()`; `fail` makes it raise a CaptureError instead."""
    gate, state = threading.Event(), {"fail": False}

    def capture(*args, **kwargs):
        assert gate.wait(60)
        if state["fail"]:
            raise CaptureError("torch.export could not capture tiny-gpt2: test failure.")
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(graphsurgeon.capture, "capture", capture)
    return gate, state


def _warm_cache():
    cm = real_capture("tiny-gpt2", meta=True)
    store_views(cache_key("tiny-gpt2", meta=True), take_snapshot(cm))
    return cm


def test_preview_paints_at_once_is_read_only_then_goes_live(qtbot, gated_capture):
    gate, _ = gated_capture
    live_twin = _warm_cache()
    win = shown_window(qtbot)
    thread = win.open_model("tiny-gpt2", meta=True, path="transformer.h.0")
    c = win.controller
    assert c.cm is None and c.preview is not None and "capturing" in win.windowTitle()
    assert set(win.scene.blocks) == {b.id for b in live_twin.blocks().view("transformer.h.0").blocks}
    win.navigate(ATTN)  # the preview can be read: unbox, crumbs, table
    assert set(win.scene.blocks) == {b.id for b in live_twin.blocks().view(ATTN).blocks}
    assert win.table.rowCount() == len(live_twin.blocks().view(ATTN).variables)
    assert [b.text() for b in win.crumb_buttons][-1] == "› attn"

    mime = _palette_mime(qtbot, win)  # a drag over the preview shows its projections: drops on them are queued
    enter = QDragEnterEvent(QPoint(200, 200), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(win.view.viewport(), enter)
    assert enter.isAccepted()
    assert {i for i, it in win.scene.blocks.items() if it.state == "target"} == {f"m:{ATTN}.c_attn", f"m:{ATTN}.c_proj"}
    win.scene.clear_targets()
    assert not win.operate.drop(f"m:{ATTN}.attn_dropout", {"r": 2, "alpha": 4, "dropout": 0.0})
    assert "Linear/Conv1D module" in win.operate.last_message
    assert win.operate.drop(f"m:{ATTN}.c_attn", {"r": 2, "alpha": 4, "dropout": 0.0})
    assert "queued" in win.scene.blocks[f"m:{ATTN}.c_attn"].geom.badge and c.cm is None
    assert win.operate.selected_lora() is None and not win.operate.delete_selected()

    gate.set()
    qtbot.waitUntil(lambda: c.cm is not None, timeout=60000)
    thread.join()
    assert c.preview is None and c.path == ATTN and "capturing" not in win.windowTitle()
    assert set(win.scene.blocks) == {b.id for b in c.cm.blocks().view(ATTN).blocks}
    assert [b.target.module for b in c.cm.loras.values()] == [f"{ATTN}.c_attn"]  # the queued drop, applied
    assert "1 of 1 queued drop(s) applied" in win.operate.last_message
    assert win.operate.budget_label.text().startswith("trainable 512 /") and win.operate.stack.count() == 1
    target = next(i for i, t in win.operate.session.candidates(ATTN).items() if t.module.endswith("c_proj"))
    assert win.operate.drop(target, {"r": 2, "alpha": 4, "dropout": 0.0})  # editing goes on once live
    assert len(c.cm.loras) == 2


@pytest.mark.parametrize("cache", ["warm", "cold"])  # the cached views, or the module hierarchy, are shown
def test_capture_failing_under_a_preview_brings_back_the_previous_model(qtbot, gated_capture, tiny_bert, monkeypatch,
                                                                         cache):
    gate, state = gated_capture
    shown = []
    monkeypatch.setattr("graphsurgeon.ui.window.QMessageBox.warning", lambda *a: shown.append(a[2]))
    if cache == "warm":
        _warm_cache()
    win = shown_window(qtbot, tiny_bert, "encoder")
    thread = win.open_model("tiny-gpt2", meta=True)
    qtbot.waitUntil(lambda: win.controller.preview is not None, timeout=60000)
    assert win.controller.path == "" and win.controller.preview.modules_only == (cache == "cold")
    state["fail"] = True
    gate.set()
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)
    thread.join()
    c = win.controller
    assert c.cm is tiny_bert and c.preview is None and c.path == "encoder"
    assert set(win.scene.blocks) == {b.id for b in tiny_bert.blocks().view("encoder").blocks}
    assert shown == ["torch.export could not capture tiny-gpt2: test failure."]


@pytest.fixture
def tiny_gpt2_folder(tmp_path):
    """tiny-gpt2 with 3 layers and a wider MLP in a local folder: a model without a shipped module tree (no preset
    has its config, at any depth)."""
    folder = tmp_path / "my-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**load_preset("tiny-gpt2").config, "n_layer": 3, "n_inner": 96}))
    return str(folder)


def test_cold_open_paints_the_module_hierarchy_while_the_capture_is_held_back(qtbot, gated_capture, tiny_gpt2_folder):
    """Nothing cached, nothing shipped: the worker builds the model on the meta device and the window paints its
    modules (read-only, with a progress indicator) before torch.export is done; then the live view replaces it on the
    same composite."""
    gate, _ = gated_capture
    assert load_views(cache_key(tiny_gpt2_folder, meta=True)) is None and shipped_tree(tiny_gpt2_folder) is None
    win = shown_window(qtbot)
    thread = win.open_model(tiny_gpt2_folder, meta=True, path="transformer.h.0")
    c = win.controller
    assert c.preview is None  # nothing to paint until the model is built
    qtbot.waitUntil(lambda: c.preview is not None, timeout=60000)  # the hierarchy, while the capture waits
    assert c.cm is None and c.preview.modules_only and c.path == "transformer.h.0" and thread.is_alive()
    assert pausing()  # the whole open (imports, build, capture) runs with the collector paused: graph/gc_pause
    assert win.opener.showing == "module tree built on meta"
    assert set(win.scene.blocks) == {f"m:transformer.h.0.{m}" for m in ("ln_1", "attn", "ln_2", "mlp")}
    shown = win.view.mapToScene(win.view.viewport().rect()).boundingRect()
    assert all(shown.intersects(item.sceneBoundingRect()) for item in win.scene.blocks.values())  # on screen
    assert win.scene.blocks["m:transformer.h.0.attn"].block.subtitle == "GPT2Attention"
    qtbot.waitUntil(lambda: "torch.export" in win.progress_label.text())  # the next stage, signalled right after
    assert win.progress.isVisible() and "modules only" in win.windowTitle() and win.table.rowCount() == 0
    win.navigate(ATTN)  # the hierarchy can be read: unbox, crumbs
    assert {b.title for b in c.view.blocks} == {"c_attn", "c_proj", "attn_dropout", "resid_dropout"}
    assert [b.text() for b in win.crumb_buttons][-1] == "› attn"
    assert not win.operate.live() and "still being captured" in win.operate.last_message

    gate.set()
    qtbot.waitUntil(lambda: c.cm is not None, timeout=60000)
    thread.join()
    assert not pausing()
    assert c.preview is None and c.path == ATTN and not win.progress.isVisible()
    assert set(win.scene.blocks) == {b.id for b in c.cm.blocks().view(ATTN).blocks}
    assert win.table.rowCount() == len(c.cm.blocks().view(ATTN).variables) > 0
    fresh = layered(win.scene.boxes, list(win.scene.wires.values()), c.viewport).positions  # the hierarchy's places
    assert {i: tuple(b.pos().toTuple()) for i, b in win.scene.blocks.items()} == fresh  # had no links: not kept
    qtbot.waitUntil(lambda: load_views(cache_key(tiny_gpt2_folder, meta=True)) is not None)  # cached after editing
    # starts (between frames): the next open paints the full views at once
    derived = module_tree_data(build_model(tiny_gpt2_folder, meta=True), tiny_gpt2_folder)
    assert known_tree(tiny_gpt2_folder) == (derived, CACHED)  # and its modules, for a first frame without torch


def test_a_folder_with_a_presets_config_paints_the_shipped_tree_at_once(qtbot, gated_capture, tmp_path):
    """save_pretrained of a preset's model (its config plus transformers_version): the preset's tree, painted by
    open() itself; the worker derives the same one from the folder and leaves the painting alone."""
    gate, _ = gated_capture
    folder = tmp_path / "saved-gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**load_preset("tiny-gpt2").config, "transformers_version": "5.0"}))
    win = shown_window(qtbot)
    thread = win.open_model(str(folder), meta=True, path="transformer.h.0")
    c = win.controller
    preview = c.preview
    assert preview is not None and win.opener.showing == "shipped module tree" and thread.is_alive()
    assert preview.source_name == str(folder)
    assert set(win.scene.blocks) == {f"m:transformer.h.0.{m}" for m in ("ln_1", "attn", "ln_2", "mlp")}
    qtbot.waitUntil(lambda: "torch.export" in win.progress_label.text(), timeout=60000)  # model built, tree checked
    assert c.preview is preview
    gate.set()
    qtbot.waitUntil(lambda: c.cm is not None, timeout=60000)
    thread.join()


def test_a_preset_paints_its_shipped_module_tree_before_the_worker_runs(qtbot, gated_capture):
    """A built-in preset's module tree ships with it: painted by open() itself, before torch is imported; the worker
    derives the same tree from the model it builds and leaves the painting alone."""
    gate, _ = gated_capture
    win = shown_window(qtbot)
    thread = win.open_model("tiny-gpt2", meta=True, path="transformer.h.0")
    c = win.controller
    shipped = c.preview
    assert shipped is not None and shipped.modules_only and win.opener.showing == "shipped module tree"
    assert set(win.scene.blocks) == {f"m:transformer.h.0.{m}" for m in ("ln_1", "attn", "ln_2", "mlp")}
    assert "modules only" in win.windowTitle() and win.progress.isVisible()
    qtbot.waitUntil(lambda: "torch.export" in win.progress_label.text(), timeout=60000)  # model built, tree checked
    assert c.preview is shipped and c.cm is None  # the same tree: not painted again
    gate.set()
    qtbot.waitUntil(lambda: c.cm is not None, timeout=60000)
    thread.join()
    assert c.preview is None and c.path == "transformer.h.0" and win.opener.showing == ""


def test_a_shipped_tree_that_differs_from_the_model_built_is_replaced(qtbot, gated_capture, monkeypatch):
    """Another transformers may build other modules than the shipped tree shows: the derived tree is painted instead,
    where the user is."""
    gate, _ = gated_capture
    wrong = shipped_tree("tiny-gpt2")
    wrong["views"]["transformer.h.0"]["blocks"].pop()  # the shipped tree lacks h.0's mlp
    monkeypatch.setattr("graphsurgeon.capture.preset_trees.shipped_tree", lambda source: wrong)
    win = shown_window(qtbot)
    thread = win.open_model("tiny-gpt2", meta=True)
    c = win.controller
    assert win.opener.showing == "shipped module tree"
    win.navigate("transformer.h.0")
    assert "m:transformer.h.0.mlp" not in win.scene.blocks
    qtbot.waitUntil(lambda: win.opener.showing == "module tree built on meta", timeout=60000)
    assert c.path == "transformer.h.0" and "m:transformer.h.0.mlp" in win.scene.blocks and c.cm is None
    gate.set()
    thread.join(60)
    qtbot.waitUntil(lambda: c.cm is not None, timeout=30000)


def test_a_later_open_wins_over_an_earlier_one(qtbot, gated_capture):
    gate, _ = gated_capture
    win = shown_window(qtbot)
    first = win.open_model("tiny-gpt2", meta=True)
    second = win.open_model("tiny-bert", meta=True)
    gate.set()
    first.join(60)
    second.join(60)
    qtbot.waitUntil(lambda: win.controller.cm is not None, timeout=30000)
    qtbot.wait(50)  # every queued signal of both opens delivered
    assert win.controller.cm.source_name == "tiny-bert" and win.controller.preview is None


def test_first_open_writes_the_cache_the_next_open_paints(qtbot):
    key = cache_key("tiny-bert", meta=True)
    assert load_views(key) is None
    win = shown_window(qtbot)
    win.open_model("tiny-bert", meta=True).join()
    qtbot.waitUntil(lambda: win.controller.cm is not None, timeout=60000)
    qtbot.waitUntil(lambda: load_views(key) is not None)  # written between frames once editing has started
    cached = load_views(key)
    assert cached is not None and cached.view("") == win.controller.cm.blocks().view("")


def test_edit_command_opens_the_window_then_captures(qtbot, monkeypatch):
    """`graphsurgeon edit MODEL --path P` (what a bare `graphsurgeon` runs): a window at once, the model when captured."""
    from PySide6.QtWidgets import QApplication

    from graphsurgeon.cli import main

    opened, before = [], set(QApplication.topLevelWidgets())
    monkeypatch.setattr(QApplication, "exec", lambda self: opened.append(self) or 0)
    assert main(["edit", "tiny-gpt2", "--path", "transformer.h.0"]) == 0 and opened
    win = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w not in before)
    qtbot.addWidget(win)
    win.operate.ask = lambda *a: True
    win.capture_thread.join(60)
    qtbot.waitUntil(lambda: win.controller.cm is not None, timeout=30000)
    assert win.controller.path == "transformer.h.0" and "m:transformer.h.0.attn" in win.scene.blocks


def test_edit_prepare_fills_the_cache_the_window_then_paints(qtbot, capsys):
    from graphsurgeon.cli import main

    key = cache_key("tiny-bert", meta=True)
    assert main(["edit", "tiny-bert", "--meta", "--prepare"]) == 0
    assert "cached in" in capsys.readouterr().out
    win = shown_window(qtbot)
    thread = win.open_model("tiny-bert", meta=True)
    assert win.controller.preview is not None and win.scene.blocks  # painted from the cache at once
    assert win.opener.showing == "cached views" and not win.controller.preview.modules_only
    thread.join(60)
    assert load_views(key).view("") == real_capture("tiny-bert", meta=True).blocks().view("")


def test_an_uncached_hub_id_says_it_downloads_and_fails_in_one_sentence_offline(qtbot, monkeypatch):
    """The editor opens a hub id as the command line does: the stage line says it downloads; with HF_HUB_OFFLINE=1
    (this suite's setting) the download is refused in one sentence and nothing else happens."""
    shown, stages = [], []
    monkeypatch.setattr("graphsurgeon.ui.window.QMessageBox.warning", lambda *a: shown.append(a[2]))
    win = shown_window(qtbot)
    win.opener.signals.stage.connect(lambda n, text: stages.append(text))
    thread = win.open_model("tiny-org/not-cached", meta=True)
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)
    thread.join()
    assert any("downloading it from the Hugging Face Hub" in s for s in stages)
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in shown[0] and win.controller.cm is None


def test_drops_on_the_module_tree_are_queued_undone_and_applied_when_the_capture_is_in(qtbot, gated_capture,
                                                                                        monkeypatch):
    """A cold launch paints the shipped module tree at once: a LoRA dropped on one of its projections is queued
    (badge, History, Ctrl-Z), then applied as the drop it stands for; one the captured graph refuses is named."""
    gate, _ = gated_capture
    win = shown_window(qtbot)
    thread = win.open_model("tiny-gpt2", meta=True, path=ATTN)
    c, ops = win.controller, win.operate
    assert c.preview.modules_only and ops.queue.accepts()
    layer0 = "transformer.h.0"
    monkeypatch.setattr(c.preview, "projections", {**c.preview.projections, f"{layer0}.ln_1": None})  # a wrong guess
    assert ops.drop(f"m:{ATTN}.c_proj", {"r": 4, "alpha": 8, "dropout": 0.0}, every_layer=True)
    assert ops.drop(f"m:{ATTN}.c_attn", {"r": 2, "alpha": 4, "dropout": 0.0})
    assert [ops.history_view.model().index(i, 0).data() for i in range(1, 3)] == [
        f"Add LoRA Layer (r=4) on {ATTN}.c_proj, on every layer · queued until the capture is in",
        f"Add LoRA Layer (r=2) on {ATTN}.c_attn · queued until the capture is in"]
    ops.undo_actions[0].trigger()  # Ctrl-Z takes the last queued drop back
    assert [d.module for d in ops.queue.drops] == [f"{ATTN}.c_proj"]
    assert win.scene.blocks[f"m:{ATTN}.c_proj"].geom.badge == "LoRA r=4 α=8 · queued"
    assert not win.scene.blocks[f"m:{ATTN}.c_attn"].geom.badge
    win.navigate(layer0)
    assert ops.drop(f"m:{layer0}.ln_1", {"r": 2, "alpha": 4, "dropout": 0.0})

    gate.set()
    qtbot.waitUntil(lambda: c.cm is not None, timeout=60000)
    thread.join()
    assert sorted(b.target.module for b in c.cm.loras.values()) == [  # as a live drop: every projection named c_proj
        f"transformer.h.{i}.{m}.c_proj" for i in (0, 1) for m in ("attn", "mlp")]
    assert ops.last_message.startswith("the capture is in: 1 of 2 queued drop(s) applied; not applied — "
                                       f"{layer0}.ln_1: {layer0}.ln_1 turned out to have no whole Linear/Conv1D output")
    assert ops.stack.count() == 1 and not ops.queue.drops and c.queued == {}
    ops.undo_actions[0].trigger()  # the applied drop is an edit like any other
    assert not c.cm.loras
