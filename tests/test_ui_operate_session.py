"""EditSession (Qt-free operate core): drops, refusals, undo, edit, recipe, autosave recovery."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from graphsurgeon.capture import capture
from shared_captures import captured
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.surgery import LoRAConfig, find_targets
from graphsurgeon.ui.operate.session import EditSession, pending_recovery
from graphsurgeon.validate import validate_full

BERT_ATTN = "encoder.layer.0.attention.self"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _peft_count(r: int, modules: list[str], layers: int = 1) -> int:
    """PEFT's trainable parameters for LoRA r on `modules` of the first `layers` layers of tiny-bert."""
    from transformers import BertConfig, BertModel
    import json
    from pathlib import Path
    import graphsurgeon
    cfg = json.loads((Path(graphsurgeon.__file__).parent.parent / "assets/presets/tiny-bert.json").read_text())
    model = BertModel(BertConfig(**cfg["config"]))
    names = [f"encoder.layer.{i}.attention.self.{m}" for i in range(layers) for m in modules]
    peft = get_peft_model(model, PeftLoraConfig(r=r, lora_alpha=16, target_modules=names))
    return sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_bert_drop_query_block_and_value_link():
    cm = captured("tiny-bert")
    s = EditSession(cm)
    before = cm.run(**_inputs(cm))
    base = s.budget().trainable
    cand = s.candidates(BERT_ATTN)
    q_block = f"m:{BERT_ATTN}.query"
    v_link = next(i for i, t in cand.items() if "->" in i and i.startswith(f"m:{BERT_ATTN}.value/out/"))
    assert q_block in cand and cand[q_block].role == "q" and cand[v_link].role == "v"
    s.drop(BERT_ATTN, q_block, config=LoRAConfig(r=4))
    s.drop(BERT_ATTN, v_link, config=LoRAConfig(r=4))
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q", f"{BERT_ATTN}.lora_v"]
    after = cm.run(**_inputs(cm))
    for k in before:
        torch.testing.assert_close(after[k], before[k])  # B = 0
    assert s.budget().trainable - base == _peft_count(4, ["query", "value"])
    assert validate_full(cm) == [] and s.dirty
    assert len(s.history_texts) == 2
    s.undo()
    assert sorted(cm.loras) == [f"{BERT_ATTN}.lora_q"]


def _inputs(cm) -> dict:
    ex = cm.example_inputs
    return ex if isinstance(ex, dict) else dict(zip(cm.input_names, ex))


def test_gpt2_every_layer_on_q_slice_one_undo():
    cm = captured("tiny-gpt2")
    s = EditSession(cm)
    original = cm.gm.code
    t0 = find_targets(cm)[0]
    cand = s.candidates(t0.attention)
    q_link = next(i for i, t in cand.items() if "->" in i and t.role == "q" and t.is_slice)
    assert cand[q_link].target_node == t0.target_node
    entry = s.drop(t0.attention, q_link, every_layer=True)
    n_layers = len({t.layer for t in find_targets(cm) if t.layer is not None})
    assert n_layers >= 2 and sorted(cm.loras) == [f"transformer.h.{i}.attn.lora_q" for i in range(n_layers)]
    assert "q" in entry.text and len(s.history_texts) == 1
    assert validate_full(cm) == []
    s.undo()
    assert cm.loras == {} and cm.gm.code == original


@pytest.mark.parametrize("where,name", [("link", "input_ids"), ("block", "LayerNorm")])
def test_invalid_drop_changes_nothing_and_says_why(where, name):
    cm = captured("tiny-bert")
    s = EditSession(cm)
    original = cm.gm.code
    if where == "link":
        view, id = "", next(l.id for l in cm.blocks().view("").links if l.value == "input_ids")
    else:
        view = "encoder.layer.0.attention.output"
        id = next(b.id for b in cm.blocks().view(view).blocks if b.subtitle == "LayerNorm")
    assert id not in s.candidates(view)
    reason = s.why_not(view, id)
    assert name in reason
    with pytest.raises(GraphsurgeonError, match=name):
        s.drop(view, id)
    assert cm.gm.code == original and cm.loras == {} and s.history_texts == [] and not s.dirty


def test_edit_r_revalidates_and_changes_budget():
    cm = captured("tiny-bert")
    s = EditSession(cm)
    s.drop(BERT_ATTN, f"m:{BERT_ATTN}.query", config=LoRAConfig(r=4))
    path = f"{BERT_ATTN}.lora_q"
    b4 = s.budget().trainable
    s.edit(path, r=8)
    assert cm.loras[path].config.r == 8 and s.diagnostics() == []
    assert s.budget().trainable - b4 == 4 * (64 + 64)  # A [r, 64] + B [64, r]
    code = cm.gm.code
    with pytest.raises(GraphsurgeonError, match="r must be"):
        s.edit(path, r=0)
    with pytest.raises(GraphsurgeonError, match="dropout"):
        s.edit(path, dropout=1.5)
    assert cm.gm.code == code and cm.loras[path].config.r == 8
    s.delete(path)
    assert cm.loras == {}


def test_unknown_palette_kind_refused_clearly():
    s = EditSession(captured("tiny-bert"))
    with pytest.raises(GraphsurgeonError, match="unknown palette block"):
        s.drop(BERT_ATTN, f"m:{BERT_ATTN}.query", kind="conv")


def test_recipe_roundtrip_on_fresh_capture(tmp_path):
    s = EditSession(captured("tiny-gpt2"))
    t0 = find_targets(s.cm)[0]
    cand = s.candidates(t0.attention)
    v_port = next(i for i, t in cand.items() if "->" not in i and t.role == "v" and t.is_slice)
    s.drop(t0.attention, v_port, every_layer=True, config=LoRAConfig(r=2))
    s.save_recipe(tmp_path / "r.json")
    assert not s.dirty
    s2 = EditSession(captured("tiny-gpt2"))
    s2.open_recipe(tmp_path / "r.json")
    assert s2.cm.gm.code == s.cm.gm.code and sorted(s2.cm.loras) == sorted(s.cm.loras)


def test_autosave_recovered_after_kill_for_the_same_model_only(tmp_path, monkeypatch):
    """A session killed mid-edit leaves an autosave under $GRAPHSURGEON_CACHE_DIR; reopening the same model
    (source, meta, eager) offers it and replays it as one edit; any other model is offered nothing."""
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "crash"))
    script = (
        "import os, signal\n"
        "from graphsurgeon.capture import capture\n"
        "from graphsurgeon.ui.operate.session import EditSession\n"
        "s = EditSession(capture('tiny-bert'))\n"
        f"s.drop({BERT_ATTN!r}, 'm:{BERT_ATTN}.query')\n"
        "open(os.environ['GRAPHSURGEON_CACHE_DIR'] + '/code.py', 'w').write(s.cm.gm.code)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.parent.name for p in (tmp_path / "crash").rglob("*.json")] == ["autosave"]

    for other in (captured("tiny-gpt2"), capture("tiny-bert", meta=True), capture("tiny-bert", eager_attention=True)):
        assert pending_recovery(other) is None, (other.source_name, other.is_meta, other.attn_implementation)
    s = EditSession(captured("tiny-bert"))
    data = pending_recovery(s.cm)
    assert data is not None and data["source"] == "tiny-bert" and len(data["recipe"]["steps"]) == 1
    entry = s.recover(data)
    assert s.cm.gm.code == (tmp_path / "crash" / "code.py").read_text()
    assert list(s.cm.loras) == [f"{BERT_ATTN}.lora_q"] and s.history.texts == [entry.text]
    s.undo()  # one edit
    assert s.cm.loras == {}
    s.clear_autosave()
    assert pending_recovery(s.cm) is None


def test_every_layer_refusal_is_all_or_nothing_and_redo():
    cm = captured("tiny-gpt2")
    s = EditSession(cm)
    targets = [t for t in find_targets(cm) if t.role == "q"]
    link1 = next(i for i, t in s.candidates(targets[1].attention).items() if "->" in i and t.role == "q")
    s.drop(targets[1].attention, link1)
    code = cm.gm.code
    link0 = next(i for i, t in s.candidates(targets[0].attention).items() if "->" in i and t.role == "q")
    with pytest.raises(GraphsurgeonError, match="already adapts"):
        s.drop(targets[0].attention, link0, every_layer=True)
    assert cm.gm.code == code and list(cm.loras) == ["transformer.h.1.attn.lora_q"] and len(s.history_texts) == 1
    out = cm.run(**_inputs(cm))
    s.undo()
    assert cm.loras == {}
    s.redo()  # fx may rename the re-inserted nodes; the blocks and outputs are what must come back
    assert list(cm.loras) == ["transformer.h.1.attn.lora_q"] and validate_full(cm) == []
    for k, v in cm.run(**_inputs(cm)).items():
        torch.testing.assert_close(v, out[k])



def test_export_writes_folder_and_clears_dirty(tmp_path):
    s = EditSession(captured("tiny-bert"))
    s.drop(BERT_ATTN, f"m:{BERT_ATTN}.query", config=LoRAConfig(r=2))
    assert s.dirty
    result = s.export(tmp_path / "out")
    assert not s.dirty and (tmp_path / "out" / "model.py").is_file() and "model.py" in result.files
    with pytest.raises(GraphsurgeonError, match="not empty"):
        s.export(tmp_path / "out")
