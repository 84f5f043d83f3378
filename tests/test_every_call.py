"""A LoRA dropped on one call of a module that runs more than once is added at every call (one adapter, as PEFT and
the merged weights apply it), on a real model: PegasusX's global-local attention calls q_proj on the tokens and on
the global states. Oracle: PEFT on the unmodified Hugging Face model with the exported adapter (same A, B).
The layout class itself is tests/test_layout_classes.py::test_a_lora_dropped_on_one_call_is_added_at_every_call."""

from __future__ import annotations

import copy

import pytest
import torch
from model_zoo import model_class, tiny_config
from surgery_models import randomize

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.graph.lora_sites import lora_sites
from graphsurgeon.surgery import lora_weights
from graphsurgeon.ui.operate.session import EditSession

peft = pytest.importorskip("peft")


def one_layer_pegasus_x() -> torch.nn.Module:
    """Tiny PegasusX (hidden 64) with one encoder and one decoder layer: the layer count changes nothing here."""
    torch.manual_seed(0)
    config = tiny_config("pegasus_x")
    config.encoder_layers = config.decoder_layers = config.num_hidden_layers = 1
    return model_class("pegasus_x")._from_config(config, attn_implementation="eager").eval()


def test_pegasus_x_drop_on_one_call_of_q_adds_it_at_every_call(tmp_path):
    hf = one_layer_pegasus_x()
    cm = capture(copy.deepcopy(hf))
    session, path = EditSession(cm), "model.encoder.layers.0.self_attn"
    calls = {t.target_node: i for i, t in session.candidates(path).items() if t.module == f"{path}.q_proj"}
    assert len(calls) == 2  # q_proj on the tokens and on the global states
    order = [n.name for n in cm.gm.graph.nodes if n.name in calls]
    entry = session.drop(path, calls[order[-1]])  # on the later call only
    assert "q_proj runs 2 times per forward: LoRA added at both calls" in entry.text
    assert sorted(b.target.target_node for b in lora_sites(cm)) == sorted(calls)
    assert list(cm.loras) == [f"{path}.lora_q"]  # one LoRA module
    randomize(cm, seed=3)
    with torch.no_grad():  # a q LoRA moves only the attention's softmax: large enough to show in the logits
        lora_weights(cm, f"{path}.lora_q")[1].weight.mul_(20)
    result = export_folder(cm, tmp_path / "out")
    assert result.check.startswith("model.py checked against the graph")
    x = dict(cm.example_inputs)
    with torch.no_grad():
        ours = cm.run(**x)[cm.output_names[0]]
        by_peft = peft.PeftModel.from_pretrained(copy.deepcopy(hf), str(tmp_path / "out")).eval()(**x).logits
        assert (ours - by_peft).abs().max().item() <= 1e-5
        assert (ours - hf(**x).logits).abs().max().item() > 1e-4  # 70× the tolerance
    session.undo()
    assert not cm.loras and not lora_sites(cm)
