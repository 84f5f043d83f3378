"""The operate side driven like a user (pytest-qt, offscreen): real key presses for undo / redo / delete, the real
File-menu actions with their file dialogs answered by the test, and closing with unsaved edits.

Shortcuts offscreen: QTest.keyClick first hands the key to the application's shortcut map (the ShortcutOverride
step), and a QAction with the default Qt.WindowShortcut context matches only when its window is the *active* window,
whichever widget the key was sent to. Offscreen a shown window is not active until events are processed, and the
last window shown takes activation: measured here, Ctrl+Z sent to window A's view while B was active undid B's
edit. So `_focus` waits for the exposure, calls `activateWindow()`, focuses the view and waits for
`isActiveWindow()`; keys are then sent to the view, as a user's would be.
"""

import json

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QUndoView

from shared_captures import captured
from graphsurgeon.surgery.spec import LoRAConfig
from graphsurgeon.ui.operate import export_task, window_ops
from graphsurgeon.ui.operate.session import autosave_path
from test_ui_operate import BERT_ATTN, _drop, _inputs, _palette_mime
from ui_windows import shown_window

LORA_Q = f"{BERT_ATTN}.lora_q"
CTRL_SHIFT = Qt.ControlModifier | Qt.ShiftModifier


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


class Dialogs:
    """Stands in for QFileDialog and QMessageBox in window_ops: answers set by the test, messages recorded."""

    def __init__(self) -> None:
        self.save_name = self.open_name = self.folder = ""  # "" is what a cancelled dialog returns
        self.asked: list[str] = []  # which file dialogs were opened
        self.messages: list[tuple[str, str, str]] = []  # (kind, title, text)

    def install(self, monkeypatch) -> None:
        d = self

        class FileDialog:
            @staticmethod
            def getSaveFileName(parent, caption, *a):
                d.asked.append(caption)
                return str(d.save_name), "Recipe (*.json)"

            @staticmethod
            def getOpenFileName(parent, caption, *a):
                d.asked.append(caption)
                return str(d.open_name), "Recipe (*.json)"

            @staticmethod
            def getExistingDirectory(parent, caption, *a):
                d.asked.append(caption)
                return str(d.folder)

        class MessageBox:
            @staticmethod
            def information(parent, title, text, *a):
                d.messages.append(("information", title, text))

            @staticmethod
            def warning(parent, title, text, *a):
                d.messages.append(("warning", title, text))

        monkeypatch.setattr(window_ops, "QFileDialog", FileDialog)
        monkeypatch.setattr(window_ops, "QMessageBox", MessageBox)
        monkeypatch.setattr(export_task, "QMessageBox", MessageBox)  # the export's result, when written in the background


@pytest.fixture
def dialogs(monkeypatch):
    d = Dialogs()
    d.install(monkeypatch)
    return d


def _focus(qtbot, win) -> None:
    """Make the window active and its view focused so its own QAction shortcuts fire (see the module docstring)."""
    qtbot.waitExposed(win)
    win.activateWindow()
    win.view.setFocus()
    qtbot.waitUntil(lambda: win.isActiveWindow() and win.view.hasFocus())


def _menu_action(win, text: str):
    """The File-menu QAction whose text is `text`."""
    found = [a for a in win.file_menu.actions() if a.text() == text]
    assert len(found) == 1, [a.text() for a in win.file_menu.actions()]
    return found[0]


def _click_block(qtbot, win, block_id: str) -> None:
    """A real left click on the block in the view: selects it as a user would."""
    pos = win.view.mapFromScene(win.scene.item(block_id).sceneBoundingRect().center())
    assert win.operate.id_at(pos) == block_id
    qtbot.mouseClick(win.view.viewport(), Qt.LeftButton, Qt.NoModifier, pos)


def _history_row(win) -> int:
    """The row the History panel (QUndoView) shows as current: 0 is "<empty>", n after n edits."""
    return win.findChild(QUndoView).currentIndex().row()


def _nodes(cm) -> list[str]:
    """The graph's ops in order, after lint; names are left out: fx never reuses an erased node's name, so a
    block inserted again by redo is spelt `…_1` (same graph, other names)."""
    cm.gm.graph.lint()
    return [f"{n.op} {n.target}" for n in cm.gm.graph.nodes]


def _outputs(cm, inputs):
    with torch.no_grad():
        return cm.run(**inputs)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _bert_with_lora_q(qtbot):
    """tiny-bert open at layer 0's self-attention, "Add LoRA Layer" dropped on query, B set non-zero."""
    cm = captured("tiny-bert")
    inputs = _inputs(cm)
    original = _outputs(cm, inputs)
    win = shown_window(qtbot, cm, BERT_ATTN)
    state = {"code": cm.gm.code, "budget": win.operate.budget_label.text(), "outputs": original}
    _drop(win, _palette_mime(qtbot, win, r=4), f"m:{BERT_ATTN}.query")
    assert sorted(cm.loras) == [LORA_Q]
    qtbot.waitUntil(lambda: autosave_path(cm).exists(), timeout=2000)  # the autosave is written right after the frame
    container = cm.gm.get_submodule(cm.loras[LORA_Q].module_path)
    with torch.no_grad():  # B = 0 would make every output equal the original: give the branch an effect
        torch.manual_seed(0)
        container.lora_B.weight.normal_()
    return cm, win, inputs, state


def test_ctrl_z_and_ctrl_shift_z_undo_and_redo_the_drop(qtbot):
    cm, win, inputs, before = _bert_with_lora_q(qtbot)
    ops = win.operate
    edited = _outputs(cm, inputs)
    edited_nodes, edited_budget, edited_code = _nodes(cm), ops.budget_label.text(), cm.gm.code
    assert edited_budget != before["budget"] and not torch.equal(edited["last_hidden_state"],
                                                                 before["outputs"]["last_hidden_state"])
    assert ops.stack.index() == 1 and _history_row(win) == 1
    _focus(qtbot, win)

    QTest.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier)
    assert cm.loras == {} and cm.gm.code == before["code"]
    assert f"m:{LORA_Q}" not in win.scene.blocks and f"m:{BERT_ATTN}.query" in win.scene.blocks
    assert ops.stack.index() == 0 and _history_row(win) == 0
    assert ops.budget_label.text() == before["budget"]
    _assert_same(_outputs(cm, inputs), before["outputs"])

    QTest.keyClick(win.view, Qt.Key_Z, CTRL_SHIFT)
    assert sorted(cm.loras) == [LORA_Q] and f"m:{LORA_Q}" in win.scene.blocks and _nodes(cm) == edited_nodes
    assert cm.gm.code == edited_code  # surgery frees erased node names: a redo writes the very same code
    assert ops.stack.index() == 1 and _history_row(win) == 1
    assert ops.budget_label.text() == edited_budget
    _assert_same(_outputs(cm, inputs), edited)  # the same weights come back, not a fresh initialisation


def test_delete_key_removes_the_selected_lora_block_and_ctrl_z_restores_it(qtbot):
    cm, win, inputs, before = _bert_with_lora_q(qtbot)
    ops = win.operate
    edited, edited_nodes = _outputs(cm, inputs), _nodes(cm)
    _focus(qtbot, win)
    _click_block(qtbot, win, f"m:{LORA_Q}")
    assert ops.selected_lora() == LORA_Q
    _focus(qtbot, win)  # the click keeps focus on the view; checked again before the key

    QTest.keyClick(win.view, Qt.Key_Delete)
    assert cm.loras == {} and cm.gm.code == before["code"] and f"m:{LORA_Q}" not in win.scene.blocks
    assert ops.stack.count() == 2 and _history_row(win) == 2 and ops.budget_label.text() == before["budget"]
    _assert_same(_outputs(cm, inputs), before["outputs"])

    QTest.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier)
    assert sorted(cm.loras) == [LORA_Q] and f"m:{LORA_Q}" in win.scene.blocks and _nodes(cm) == edited_nodes
    assert _history_row(win) == 1
    _assert_same(_outputs(cm, inputs), edited)


def test_delete_key_with_nothing_selected_changes_nothing_and_says_why(qtbot):
    cm, win, _, _ = _bert_with_lora_q(qtbot)
    win.scene.clearSelection()
    _focus(qtbot, win)
    QTest.keyClick(win.view, Qt.Key_Delete)
    assert sorted(cm.loras) == [LORA_Q] and win.operate.stack.count() == 1
    assert "select an inserted LoRA block" in win.operate.last_message


def test_save_recipe_then_open_it_in_a_new_window_gives_the_same_graph(qtbot, tmp_path, dialogs):
    cm, win, _, _ = _bert_with_lora_q(qtbot)
    dialogs.save_name = tmp_path / "surgery.json"
    _menu_action(win, "Save recipe…").trigger()
    assert dialogs.asked == ["Save recipe"] and not win.operate.session.dirty
    data = json.loads((tmp_path / "surgery.json").read_text())
    assert data["format"] == "graphsurgeon-recipe" and len(data["steps"]) == 1

    win2 = shown_window(qtbot, captured("tiny-bert"), BERT_ATTN)
    dialogs.open_name = tmp_path / "surgery.json"
    _menu_action(win2, "Open recipe…").trigger()
    cm2 = win2.controller.cm
    assert sorted(cm2.loras) == sorted(cm.loras) and cm2.gm.code == cm.gm.code
    assert f"m:{LORA_Q}" in win2.scene.blocks and win2.operate.stack.count() == 1
    assert dialogs.messages == []


@pytest.mark.parametrize("text", ['{"format": "graphsurgeon-recipe", "steps": [',  # cut short
                                  '{"format": "something else", "version": 1}',
                                  '[]'])  # JSON, but not an object
def test_open_recipe_on_a_bad_file_warns_and_changes_nothing(qtbot, tmp_path, dialogs, text):
    cm, win, _, _ = _bert_with_lora_q(qtbot)
    code, count = cm.gm.code, win.operate.stack.count()
    (tmp_path / "bad.json").write_text(text)
    dialogs.open_name = tmp_path / "bad.json"
    _menu_action(win, "Open recipe…").trigger()
    assert [(kind, title) for kind, title, _ in dialogs.messages] == [("warning", "Open recipe")]
    assert "recipe" in dialogs.messages[0][2]
    assert cm.gm.code == code and sorted(cm.loras) == [LORA_Q] and win.operate.stack.count() == count


def test_export_folder_writes_the_folder_and_says_how_to_train(qtbot, tmp_path, dialogs):
    _, win, _, _ = _bert_with_lora_q(qtbot)
    out = tmp_path / "out"
    out.mkdir()  # what a directory dialog returns exists already
    dialogs.folder = out
    _menu_action(win, "Export folder…").trigger()
    assert dialogs.asked == ["Export into folder"]
    qtbot.waitUntil(lambda: not win.operate.export_task.running, timeout=120000)  # written in the background
    files = {"model.py", "model.safetensors", "train.py", "surgery.json"}
    assert files <= {p.name for p in out.iterdir()}
    assert [(kind, title) for kind, title, _ in dialogs.messages] == [("information", "Exported")], dialogs.messages
    text = dialogs.messages[0][2]
    assert str(out) in text and all(f in text for f in files)
    assert "python train.py" in text and not win.operate.session.dirty
    assert "model.py checked against the graph: 2 lengths, random LoRA, max diff " in text  # the self-check ran


def test_cancelled_file_dialogs_do_nothing(qtbot, tmp_path, dialogs, monkeypatch):
    cm, win, _, _ = _bert_with_lora_q(qtbot)
    monkeypatch.chdir(tmp_path)  # a relative "" must not be written anywhere either
    code = cm.gm.code
    for text in ("Save recipe…", "Open recipe…", "Export folder…"):
        _menu_action(win, text).trigger()
    assert dialogs.asked == ["Save recipe", "Open recipe", "Export into folder"]
    assert dialogs.messages == [] and list(tmp_path.iterdir()) == [tmp_path / "cache"]
    assert cm.gm.code == code and win.operate.stack.count() == 1 and win.operate.session.dirty


def test_close_with_unsaved_edits_asks_and_keeps_the_autosave_when_refused(qtbot):
    _, win, _, _ = _bert_with_lora_q(qtbot)
    questions = []
    win.operate.ask = lambda title, question: questions.append(question) or False
    assert win.operate.session.dirty and autosave_path(win.controller.cm).exists()

    ev = QCloseEvent()
    QApplication.sendEvent(win, ev)
    assert not ev.isAccepted()  # the window's close event is ignored ...
    assert not win.close() and win.isVisible()  # ... so close() leaves it open
    assert len(questions) == 2 and "unsaved" in questions[0].lower()
    assert autosave_path(win.controller.cm).exists()  # still recoverable

    win.operate.ask = lambda *a: True
    assert win.close() and not win.isVisible()
    assert not autosave_path(win.controller.cm).exists()  # a clean close leaves nothing to recover


def test_close_without_edits_does_not_ask(qtbot):
    win = shown_window(qtbot, captured("tiny-bert"), BERT_ATTN)
    win.operate.ask = lambda *a: pytest.fail("asked although nothing was edited")
    assert win.close() and not win.isVisible()


def _recipe(tmp_path, steps, model_class="BertModel"):
    file = tmp_path / "recipe.json"
    file.write_text(json.dumps({"format": "graphsurgeon-recipe", "version": 1, "model_class": model_class,
                                "steps": steps}))
    return file


def _step(op, role, layer, **extra):
    module = f"encoder.layer.{layer}.attention.self.{ {'q': 'query', 'v': 'value'}[role]}"
    return {"op": op, "role": role, "layer": layer, "module": module, **extra}


def _insert(role, layer, r=2):
    return _step("insert", role, layer, config=LoRAConfig(r=r, alpha=4.0).as_dict())


def test_open_recipe_replays_as_one_edit_that_ctrl_z_undoes(qtbot, tmp_path, dialogs):
    """File → Open recipe on a fresh model: every step in, one History row, the usual validation; Ctrl+Z takes it
    all back and Ctrl+Shift+Z brings it back."""
    cm = captured("tiny-bert")
    win = shown_window(qtbot, cm, BERT_ATTN)
    code = cm.gm.code
    change = _step("change", "q", 1, config=LoRAConfig(r=3, alpha=6.0, dropout=0.1).as_dict())
    dialogs.open_name = _recipe(tmp_path, [_insert("q", 0), _insert("v", 0), _insert("q", 1), change])
    _menu_action(win, "Open recipe…").trigger()
    assert dialogs.messages == [] and dialogs.asked == ["Open recipe"]
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q", f"{BERT_ATTN}.lora_v", "encoder.layer.1.attention.self.lora_q"]
    assert cm.loras["encoder.layer.1.attention.self.lora_q"].config.r == 3
    assert f"m:{LORA_Q}" in win.scene.blocks and win.operate.stack.count() == 1 and _history_row(win) == 1
    assert win.operate.stack.text(0) == "Open recipe recipe.json (4 steps)"
    assert win.operate.validate_now() == [] and win.operate.validated_version == cm.version
    edited = cm.gm.code
    _focus(qtbot, win)
    QTest.keyClick(win.view, Qt.Key_Z, Qt.ControlModifier)
    assert cm.loras == {} and cm.gm.code == code and f"m:{LORA_Q}" not in win.scene.blocks
    QTest.keyClick(win.view, Qt.Key_Z, CTRL_SHIFT)
    assert len(cm.loras) == 3 and cm.gm.code == edited and f"m:{LORA_Q}" in win.scene.blocks


@pytest.mark.parametrize("steps, says", [
    ([_insert("q", 0), _insert("v", 0, r=500)], "step 2 (insert on role 'v' of layer 0) is refused"),
    ([_insert("q", 0), _insert("q", 9)], "step 2 (insert LoRA on role 'q' of layer 9) has no target"),
    ([_insert("q", 0), _step("insert", "v", 0)], "step 2 (insert) lacks 'config'"),
    ([_step("remove", "q", 0)], "step 1 (remove on role 'q' of layer 0) is refused"),
    ([_insert("q", 0), "q"], "step 2 is str"),
    ([], "has no steps"),
    ("GPT2LMHeadModel", "this recipe was made on GPT2LMHeadModel"),
])
def test_open_recipe_refused_warns_in_one_sentence_and_changes_nothing(qtbot, tmp_path, dialogs, steps, says):
    cm = captured("tiny-bert")
    win = shown_window(qtbot, cm, BERT_ATTN)
    code, blocks = cm.gm.code, sorted(win.scene.blocks)
    dialogs.open_name = (_recipe(tmp_path, [_insert("q", 0)], model_class=steps) if isinstance(steps, str)
                         else _recipe(tmp_path, steps))
    _menu_action(win, "Open recipe…").trigger()
    [(kind, title, text)] = dialogs.messages
    assert (kind, title) == ("warning", "Open recipe") and says in text, text
    assert "\n" not in text and "Traceback" not in text
    assert cm.gm.code == code and cm.loras == {} and sorted(win.scene.blocks) == blocks
    assert win.operate.stack.count() == 0
