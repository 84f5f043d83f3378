"""Add LoRA Layer: structure, B=0 identity, the ΔW oracle on seven architectures, PEFT equivalence."""

import pytest
import torch

from graphsurgeon.surgery import LoRAConfig, add_lora, find_targets, insert_lora, lora_weights
from surgery_models import ARCHS, build, delta_w_oracle as _oracle, first_output, fresh, randomize as _randomize


@pytest.mark.parametrize("arch", ARCHS)
def test_branch_is_a_low_rank_weight_update(arch):
    cm = fresh(arch)
    before = first_output(cm)
    add_lora(cm, ("q", "k", "v"), config=LoRAConfig(r=2, alpha=6))
    cm.gm.graph.lint()
    assert len(cm.loras) == 6
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    for block in cm.loras.values():  # each add's value is what the fake add gives (insert_lora may make it directly)
        add = nodes[block.add_node]
        target, branch = (a.meta["val"] for a in add.args)
        with target.fake_mode:
            want = target + branch
        got = add.meta["val"]
        assert (got.shape, got.stride(), got.dtype, got.device) == (want.shape, want.stride(), want.dtype, want.device)
    assert torch.equal(first_output(cm), before)  # B = 0 right after insertion: outputs unchanged
    _randomize(cm)
    edited = first_output(cm)
    assert not torch.allclose(edited, before, atol=1e-3)
    torch.testing.assert_close(edited, _oracle(arch, cm), atol=2e-5, rtol=1e-4)


def test_equals_peft_on_bert_query_value():
    peft = pytest.importorskip("peft")
    cm = fresh("bert")
    add_lora(cm, ("q", "v"), config=LoRAConfig(r=4, alpha=8, dropout=0.1))
    _randomize(cm, seed=3)
    model = peft.get_peft_model(build("bert"), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                                target_modules=["query", "value"]))
    model.eval()
    peft_params = dict(model.named_parameters())
    with torch.no_grad():
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            peft_params[f"base_model.model.{block.target.module}.lora_A.default.weight"].copy_(a.weight)
            peft_params[f"base_model.model.{block.target.module}.lora_B.default.weight"].copy_(b.weight)
    expected = model(**cm.example_inputs)[0]
    torch.testing.assert_close(first_output(cm), expected, atol=2e-5, rtol=1e-4)


def test_view_unboxes_into_primitives():
    from shared_captures import captured

    cm = captured("tiny-gpt2")
    block = insert_lora(cm, find_targets(cm, ("q",))[0], LoRAConfig(r=8))
    assert block.path == "transformer.h.0.attn.lora_q" and cm.loras[block.path] is block
    bg = cm.blocks()
    parent = bg.view("transformer.h.0.attn")
    assert parent.find("lora_q").subtitle == "AddLoRALayer"
    outer = bg.view(block.path)
    assert sorted(b.title for b in outer.blocks if b.kind != "input" and b.kind != "output") == ["add", "lora"]
    inner = bg.view(block.path + ".lora")
    chain = [(b.title, b.outputs[0].meta.shape_text) for b in inner.blocks if b.kind in ("primitive", "composite")]
    assert chain == [("reshape", "[batch*seq, 64]"), ("dropout", "[batch*seq, 64]"), ("lora_A", "[batch*seq, 8]"),
                     ("lora_B", "[batch*seq, 64]"), ("mul", "[batch*seq, 64]"), ("reshape", "[batch, seq, 64]")]
    assert bg.param_count(block.path) == 2 * 64 * 8
    # dynamic batch and seq survive: a different input size runs
    out = cm.run(input_ids=torch.randint(0, 100, (3, 7)))
    assert next(iter(out.values())).shape[:2] == (3, 7)


def test_init_dtype_device_and_rslora():
    from shared_captures import captured

    cm = captured("tiny-gpt2")
    ts = find_targets(cm, ("q", "v"))
    insert_lora(cm, ts[0], LoRAConfig(r=4, alpha=8, use_rslora=True))
    insert_lora(cm, ts[1], LoRAConfig(r=4, init="gaussian"))
    a, b = lora_weights(cm, "transformer.h.0.attn.lora_q")
    bound = 1 / 64 ** 0.5  # kaiming_uniform(a=√5) on [r, in] gives U(-1/√in, 1/√in)
    assert a.weight.abs().max() <= bound and a.weight.std() > bound / 4 and torch.all(b.weight == 0)
    assert a.weight.dtype == cm.gm.get_parameter("transformer.h.0.attn.c_attn.weight").dtype
    scale = [n for n in cm.gm.graph.nodes if n.name == "transformer_h_0_attn_lora_q_scale"][0]
    assert scale.args[1] == pytest.approx(8 / 2)  # alpha / sqrt(r)
    ga, _ = lora_weights(cm, "transformer.h.0.attn.lora_v")
    assert abs(ga.weight.std().item() - 1 / 4) < 0.05  # normal std 1/r


def test_meta_capture_keeps_meta_weights():
    from graphsurgeon.capture import capture

    cm = capture("tiny-gpt2", meta=True)
    add_lora(cm, ("q", "v"))
    cm.gm.graph.lint()
    a, b = lora_weights(cm, "transformer.h.1.attn.lora_v")
    assert a.weight.is_meta and b.weight.is_meta


def test_gpt2_q_v_slices_equal_one_rank_2r_peft_adapter_on_c_attn():
    """PEFT cannot slice c_attn, but q+v slice adapters equal one rank-2r adapter on it: A stacked,
    B block-structured with zero K rows, alpha doubled (same alpha/r scaling)."""
    peft = pytest.importorskip("peft")
    cm = fresh("gpt2")
    r, alpha = 2, 6.0
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=r, alpha=alpha))
    _randomize(cm, seed=5)
    model = peft.get_peft_model(build("gpt2"), peft.LoraConfig(r=2 * r, lora_alpha=2 * alpha, fan_in_fan_out=True,
                                                                target_modules=["c_attn"]))
    model.eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for layer in range(2):
            qa, qb = lora_weights(cm, f"transformer.h.{layer}.attn.lora_q")
            va, vb = lora_weights(cm, f"transformer.h.{layer}.attn.lora_v")
            key = f"base_model.model.transformer.h.{layer}.attn.c_attn"
            params[f"{key}.lora_A.default.weight"].copy_(torch.cat([qa.weight, va.weight]))  # [2r, in]
            b = torch.zeros(192, 2 * r)
            b[0:64, :r], b[128:192, r:] = qb.weight, vb.weight  # q rows, v rows; k rows stay 0
            params[f"{key}.lora_B.default.weight"].copy_(b)
    torch.testing.assert_close(first_output(cm), model(**cm.example_inputs)[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch, roles", [("gpt2", ("c_fc", "c_proj")), ("llama", ("o_proj", "down_proj"))])
def test_explicit_projections_are_low_rank_updates_too(arch, roles):
    cm = fresh(arch)
    add_lora(cm, roles, "1", LoRAConfig(r=3, alpha=3))
    assert {b.target.layer for b in cm.loras.values()} == {1} and len(cm.loras) == len(roles) + (arch == "gpt2")  # gpt2: attn.c_proj and mlp.c_proj
    _randomize(cm, seed=7)
    cm.gm.graph.lint()
    torch.testing.assert_close(first_output(cm), _oracle(arch, cm), atol=2e-5, rtol=1e-4)
