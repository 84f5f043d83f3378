"""Add LoRA Layer: structure, B=0 identity, the ΔW oracle on seven architectures, PEFT equivalence."""
import sys, pathlib; sys.path.insert(0, str(pathlib.Path(__file__).parent))  # noqa: E401,E702

import pytest
import torch

from graphsurgeon.surgery import LoRAConfig, add_lora, find_targets, insert_lora, lora_weights
from surgery_models import ARCHS, build, first_output, fresh


def _randomize(cm, seed: int = 1) -> None:
    """Non-zero A and B in every block (B=0 would hide any wiring mistake)."""
    gen = torch.Generator().manual_seed(seed)
    for path in cm.loras:
        a, b = lora_weights(cm, path)
        with torch.no_grad():
            a.weight.copy_(torch.randn(a.weight.shape, generator=gen) * 0.2)
            b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * 0.2)


def _oracle(arch: str, cm) -> torch.Tensor:
    """The unmodified model whose projection weights got ΔW·scaling added on the adapted columns."""
    model = build(arch)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            delta = (b.weight @ a.weight) * block.config.scaling  # [out, in]
            t = block.target
            lo, hi = t.columns or (0, t.out_features)
            w = params[f"{t.module}.weight"]
            if t.kind == "conv1d":
                w[:, lo:hi] += delta.T  # Conv1D weight is [in, out]: columns
            else:
                w[lo:hi, :] += delta  # Linear weight is [out, in]: rows
        return model(**cm.example_inputs)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_branch_is_a_low_rank_weight_update(arch):
    cm = fresh(arch)
    before = first_output(cm)
    add_lora(cm, ("q", "k", "v"), config=LoRAConfig(r=2, alpha=6))
    cm.gm.graph.lint()
    assert len(cm.loras) == 6
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
    from graphsurgeon.capture import capture

    cm = capture("tiny-gpt2")
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
    from graphsurgeon.capture import capture

    cm = capture("tiny-gpt2")
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
