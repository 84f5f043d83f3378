"""Validation: refusals with a Diagnostic and nothing changed; full fake-tensor propagation finds a bad edit."""

import dataclasses

import pytest
from shared_captures import captured
from graphsurgeon.surgery import LoRAConfig, find_targets, insert_lora
from graphsurgeon.validate import ValidationError, check_insertion, validate_full
from graphsurgeon.validate.full import bare_fake_prop


@pytest.fixture
def gpt2():
    return captured("tiny-gpt2")


def _refused(cm, target, config, match):
    code, params = cm.gm.code, [n for n, _ in cm.gm.named_parameters()]
    with pytest.raises(ValidationError, match=match) as info:
        insert_lora(cm, target, config)
    assert cm.gm.code == code and [n for n, _ in cm.gm.named_parameters()] == params  # nothing changed
    return info.value.diagnostics[0]


def test_refusals_name_node_expected_and_found(gpt2):
    q = find_targets(gpt2, ("q",))[0]
    d = _refused(gpt2, q, LoRAConfig(r=65), "too large for .*: r must be between 1 and min")
    assert (d.node, d.expected, d.found) == ("getitem", "1 ≤ r ≤ 64", "65")
    d = _refused(gpt2, dataclasses.replace(q, target_node="input_ids"), LoRAConfig(), "integer tensor cannot be adapted")
    assert d.node == "input_ids" and "int64" in d.found
    size = next(n.name for n in gpt2.gm.graph.nodes if n.name.startswith("sym_size_int"))  # a SymInt, not a tensor
    _refused(gpt2, dataclasses.replace(q, target_node=size), LoRAConfig(), "scalar cannot be adapted")
    d = _refused(gpt2, dataclasses.replace(q, target_node="layer_norm"), LoRAConfig(), "no Linear/Conv1D projection")
    assert "layer_norm" in d.found
    _refused(gpt2, dataclasses.replace(q, in_features=32), LoRAConfig(r=4), "in_features")
    _refused(gpt2, dataclasses.replace(q, input_node="split"), LoRAConfig(r=4), "floating-point")
    insert_lora(gpt2, q, LoRAConfig(r=4))
    d = _refused(gpt2, q, LoRAConfig(r=4), "already adapts this tensor; change its r/alpha/dropout")
    assert d.found == "transformer.h.0.attn.lora_q"


def test_token_dims_must_agree(gpt2):
    q = find_targets(gpt2, ("q",))[0]
    # x from a different-length tensor: the first token embedding [batch, seq, 64] vs a [1, seq, 64] position one
    bad = dataclasses.replace(q, input_node="embedding_1")
    assert [d.message for d in check_insertion(gpt2, bad, LoRAConfig(r=4))] == \
        ["the token dims of x and of the target differ, so B·A·x cannot be added."]


def test_full_validation_clean_and_broken(gpt2):
    from graphsurgeon.surgery import add_lora

    assert validate_full(gpt2) == []
    add_lora(gpt2, ("q", "v"))
    assert validate_full(gpt2) == []
    bare_fake_prop(gpt2)()  # the peer runs too, and never writes the recorded meta
    node = next(n for n in gpt2.gm.graph.nodes if n.name == "transformer_h_0_attn_lora_q_out")
    node.args = (node.args[0], [node.args[1][0], node.args[1][1], 32, 2])
    diags = validate_full(gpt2)
    assert diags[0].node == node.name and diags[0].expected.endswith(", 64] torch.float32")
    assert diags[0].found.endswith("32, 2] torch.float32") and diags[0].message.startswith(f"%{node.name}")
    assert diags[-1].node == "transformer_h_0_attn_lora_q_add" and "fails shape propagation" in diags[-1].message


def test_full_validation_reports_lint_failure(gpt2):
    first = next(n for n in gpt2.gm.graph.nodes if n.op == "call_function")
    later = list(gpt2.gm.graph.nodes)[-2]
    first.args = (later,) + tuple(first.args[1:])
    diags = validate_full(gpt2)
    assert len(diags) == 1 and "used before it has been defined" in diags[0].message
