"""Models too large to run here are checked on a shrunk twin (export/twin.py): every layer kind kept (two layers
each), head counts and head_dim ratios kept, widths reduced; its model.py is written by the same code and checked
like any export — and it is the Hugging Face model at the twin's config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from graphsurgeon.capture import capture
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export import export_folder
from graphsurgeon.export.twin import build_twin, twin_config
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import fresh  # noqa: E402
from test_export import load_exported  # noqa: E402


def test_the_twin_config_keeps_kinds_heads_and_ratios():
    gemma = {"model_type": "gemma3_text", "num_hidden_layers": 12, "hidden_size": 2560, "num_attention_heads": 8,
             "num_key_value_heads": 4, "head_dim": 256, "intermediate_size": 10240,
             "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 2}
    twin, kept = twin_config(gemma, "Gemma3ForCausalLM", {3: frozenset({"q", "v"})})
    assert kept == [0, 3, 5, 11]  # two of each kind; a layer with the LoRA and one without
    assert twin["layer_types"] == ["sliding_attention"] * 2 + ["full_attention"] * 2 and twin["num_hidden_layers"] == 4
    assert (twin["num_attention_heads"], twin["num_key_value_heads"], twin["head_dim"]) == (8, 4, 16)
    assert twin["hidden_size"] / twin["head_dim"] == 2560 / 256 and twin["intermediate_size"] / twin["hidden_size"] == 4
    assert twin["architectures"] == ["Gemma3ForCausalLM"]
    phi = {"num_hidden_layers": 32, "hidden_size": 2560, "num_attention_heads": 32, "intermediate_size": 10240,
           "partial_rotary_factor": 0.4}  # head_dim 80: the rotary part must stay an even width
    twin, _ = twin_config(phi, "PhiForCausalLM", {})
    head_dim = twin["hidden_size"] // twin["num_attention_heads"]
    assert head_dim * 0.4 == int(head_dim * 0.4) and int(head_dim * 0.4) % 2 == 0 and twin["hidden_size"] < 2560


def test_real_size_gpt2_on_meta_is_checked_on_its_twin_which_is_the_hf_model(tmp_path):
    cm = capture("gpt2", meta=True)
    add_lora(cm, roles=("q", "v"), layers="3", config=LoRAConfig(r=4, alpha=8))
    twin, config = build_twin(cm)
    assert (config["n_layer"], config["n_head"], config["n_embd"]) == (2, 12, 192)
    assert sorted({b.target.layer for b in twin.loras.values()}) == [1]  # layer 3 kept as the twin's second layer
    result = export_folder(twin, tmp_path / "twin", random_weights=True)  # the twin's own export: checked at its own size
    assert "model.py checked against the graph: 2 lengths, random LoRA" in result.check
    mine = load_exported(tmp_path / "twin")
    torch.manual_seed(0)
    hf = tf.GPT2LMHeadModel(tf.GPT2Config(**config)).eval()
    weights = {k: v for k, v in load_file(str(tmp_path / "twin" / "model.safetensors")).items() if "lora_" not in k}
    hf.load_state_dict(weights, strict=False)  # B = 0: the LoRA adds nothing
    ids = torch.randint(0, config["vocab_size"], (2, 9))
    with torch.no_grad():
        assert (mine(input_ids=ids)["logits"] - hf(input_ids=ids).logits).abs().max() <= 1e-5
    out = export_folder(cm, tmp_path / "out", random_weights=True)  # the real-size export: checked on the twin
    assert out.check.startswith("the shrunk twin's model.py checked against the graph: 2 lengths, random LoRA")
    assert "captured architecture-only (--meta)" in out.check and (tmp_path / "out" / "model.py").is_file()


def test_a_memory_budget_sends_a_model_to_its_twin(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CHECK_MEMORY", "10KB")
    cm = fresh("llama")
    result = export_folder(cm, tmp_path / "out")
    assert "over the check's budget of 0.0 GiB" in result.check and "shrunk twin" in result.check
    monkeypatch.setenv("GRAPHSURGEON_CHECK_MEMORY", "lots")
    with pytest.raises(GraphsurgeonError, match=r"GRAPHSURGEON_CHECK_MEMORY='lots' is not a size; give one like 16GB"):
        export_folder(cm, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
