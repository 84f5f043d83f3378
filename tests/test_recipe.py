"""Recipes: history → JSON → replay on another capture of the same architecture; a mismatch changes nothing."""

import json

import pytest
import torch

from shared_captures import captured
from graphsurgeon.surgery import ChangeLoRA, History, LoRAConfig, add_lora
from graphsurgeon.surgery.recipe import RecipeError, load_recipe, replay, save_recipe
from surgery_models import fresh


def test_save_and_replay_on_other_weights(tmp_path):
    cm = captured("tiny-gpt2")
    history = History(cm)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=4, alpha=8, dropout=0.05), history=history)
    history.do(ChangeLoRA(cm, "transformer.h.1.attn.lora_v", r=2))
    data = save_recipe(history, tmp_path / "recipe.json")
    assert json.loads((tmp_path / "recipe.json").read_text()) == data
    assert data["version"] == 1 and [s["op"] for s in data["steps"]] == ["insert"] * 4 + ["change"]
    assert data["steps"][0] == {"op": "insert", "role": "q", "layer": 0, "module": "transformer.h.0.attn.c_attn",
                                "config": LoRAConfig(r=4, alpha=8, dropout=0.05).as_dict()}

    other = captured("tiny-gpt2")
    with torch.no_grad():
        for p in other.gm.parameters():
            p.add_(0.01)  # same architecture, other weights
    other_history = History(other)
    replay(other, load_recipe(tmp_path / "recipe.json"), other_history)
    assert {p: (b.config.r, b.config.alpha, b.config.dropout) for p, b in other.loras.items()} == \
           {p: (b.config.r, b.config.alpha, b.config.dropout) for p, b in cm.loras.items()}
    other.gm.graph.lint()
    other_history.undo()  # the whole replay is one edit
    assert other.loras == {}


def test_missing_target_fails_clearly_and_changes_nothing(tmp_path):
    cm = captured("tiny-gpt2")
    history = History(cm)
    add_lora(cm, ("q", "v"), "all", history=history)
    save_recipe(history, tmp_path / "r.json")
    data = load_recipe(tmp_path / "r.json")
    data["steps"].append({"op": "insert", "role": "q", "layer": 7, "module": "x", "config": LoRAConfig().as_dict()})
    bert = fresh("bert")
    code = bert.gm.code
    bert_data = dict(data, steps=[dict(s) for s in data["steps"]])
    with pytest.raises(RecipeError, match=r"made on GPT2LMHeadModel .*not on this BertModel.*--map-by-role"):
        replay(bert, bert_data)
    with pytest.raises(RecipeError, match=r"step 5 \(insert LoRA on role 'q' of layer 7\) has no target"):
        replay(bert, bert_data, map_by_role=True)
    assert bert.gm.code == code and bert.loras == {}


def test_not_a_recipe(tmp_path):
    (tmp_path / "x.json").write_text("{\"steps\": []}")
    with pytest.raises(RecipeError, match="not a graphsurgeon recipe"):
        replay(captured("tiny-gpt2"), load_recipe(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text("not json")
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        load_recipe(tmp_path / "y.json")
