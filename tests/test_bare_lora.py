"""The bare "LoRA Layer": the branch alone, wired by hand onto a value (its own target or another one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export import ExportError, export_folder
from graphsurgeon.surgery import (ConnectLoRA, History, InsertLoRA, LoRAConfig, RemoveLoRA, ChangeLoRA,
                                  find_targets, lora_weights)
from graphsurgeon.surgery.recipe import recipe_dict, replay
from graphsurgeon.ui.operate.session import EditSession
from graphsurgeon.validate import validate_full

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, delta_w_oracle, first_output, fresh, randomize  # noqa: E402
from test_export import inputs, load_exported  # noqa: E402

CFG = LoRAConfig(r=2, alpha=4)


def target(cm, role="q", layer=0):
    return next(t for t in find_targets(cm) if t.role == role and t.layer == layer)


def fused_output(cm, layer: int = 0) -> str:
    """The fx name of c_attn's fused output [batch, seq, 192] (found by module and shape, not by fx name)."""
    module = f"transformer.h.{layer}.attn.c_attn"
    return [n.name for n in cm.gm.graph.nodes if list(n.meta.get("nn_module_stack", {}).values())[-1:]
            and list(n.meta["nn_module_stack"].values())[-1][0] == module and getattr(n.meta.get("val"), "shape", [0])[-1:] == (192,)
            and n.meta["val"].dim() == 3][-1]


def snapshot(cm):
    return cm.gm.code, {k: v.clone() for k, v in cm.gm.state_dict().items()}


def same(cm, snap) -> bool:
    code, params = snap
    now = cm.gm.state_dict()
    return cm.gm.code == code and params.keys() == now.keys() and all(torch.equal(params[k], now[k]) for k in params)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_unconnected_changes_nothing_connected_to_target_equals_add_lora(arch):
    cm = fresh(arch)
    base = first_output(cm).clone()
    t = target(cm)
    h = History(cm)
    h.do(InsertLoRA(t, CFG, bare=True))
    randomize(cm)
    block = next(iter(cm.loras.values()))
    assert block.kind == "bare" and block.module_path == block.path and block.wired_to is None
    assert torch.equal(first_output(cm), base)  # computed, but nothing reads it
    cm.gm.graph.lint()
    problems = validate_full(cm)
    assert len(problems) == 1 and "not connected" in problems[0].message and block.path in problems[0].message
    view = cm.blocks().view(t.attention)
    lora = view.block(f"m:{block.path}")
    assert lora.subtitle == "LoRALayer" and len(lora.outputs) == 1 and lora.outputs[0].meta.shape[-1] == "64"

    h.do(ConnectLoRA(cm, block.path, t.target_node))
    assert validate_full(cm) == [] and block.mergeable
    wired = first_output(cm).clone()
    assert (wired - base).abs().max() > 1e-3
    assert torch.allclose(wired, delta_w_oracle(arch, cm), atol=1e-5)

    twin = fresh(arch)  # the Add LoRA Layer with the same weights gives exactly the same outputs
    InsertLoRA(t, CFG).apply(twin)
    a, b = lora_weights(cm, block.path)
    a2, b2 = lora_weights(twin, block.path)
    with torch.no_grad():
        a2.weight.copy_(a.weight)
        b2.weight.copy_(b.weight)
    assert torch.equal(first_output(twin), wired)

    h.undo()
    assert torch.equal(first_output(cm), base) and block.wired_to is None
    h.redo()
    assert torch.equal(first_output(cm), wired)


def test_connect_elsewhere_change_remove_and_undo_all():
    cm = fresh("gpt2")
    base, untouched = first_output(cm).clone(), snapshot(cm)
    t = target(cm, "v")
    h = History(cm)
    h.do(InsertLoRA(t, CFG, bare=True))
    randomize(cm)
    path = next(iter(cm.loras))
    onto = target(cm, "q").target_node  # q's slice has v's shape: allowed, but no ΔW of a weight any more
    h.do(ConnectLoRA(cm, path, onto))
    assert not cm.loras[path].mergeable and validate_full(cm) == []
    wired = first_output(cm).clone()
    assert (wired - base).abs().max() > 1e-3
    h.do(ChangeLoRA(cm, path, alpha=8.0))  # same r: weights kept, connection kept, output scaled
    assert cm.loras[path].wired_to == onto and not torch.equal(first_output(cm), wired)
    h.do(RemoveLoRA(cm, path))
    assert torch.equal(first_output(cm), base) and not cm.loras
    h.undo()
    assert cm.loras[path].wired_to == onto and cm.loras[path].config.alpha == 8.0
    for _ in range(3):
        h.undo()
    assert not cm.loras and torch.equal(first_output(cm), base)
    code, _ = untouched
    assert cm.gm.code.count("lora") == 0 and len(cm.gm.code) == len(code)
    cm.gm.graph.lint()


def test_refusals_change_nothing_and_say_why():
    cm = fresh("gpt2")
    t = target(cm)
    InsertLoRA(t, CFG, bare=True).apply(cm)
    InsertLoRA(target(cm, "v"), CFG).apply(cm)
    bare = next(p for p, b in cm.loras.items() if b.kind == "bare")
    added = next(p for p, b in cm.loras.items() if b.kind == "add")
    before = snapshot(cm)
    cases = {
        "input_ids": "floating-point",  # an int tensor
        t.input_node: "before the output",  # x: c_attn reads it before the LoRA output exists
        cm.loras[bare].nodes[0]: "floating-point",  # a sym size of its own branch
        fused_output(cm): "another shape",  # c_attn's fused output [batch, seq, 192]
    }
    for onto, why in cases.items():
        with pytest.raises(GraphsurgeonError) as err:
            ConnectLoRA(cm, bare, onto).apply(cm)
        assert why in str(err.value) or "before the output" in str(err.value), (onto, str(err.value))
        assert same(cm, before)
    with pytest.raises(GraphsurgeonError, match="expected \\[batch, seq, 64\\] floating point, found \\[batch, seq, 192\\]"):
        ConnectLoRA(cm, bare, fused_output(cm)).apply(cm)
    with pytest.raises(GraphsurgeonError, match="only a bare LoRA Layer"):
        ConnectLoRA(cm, added, t.target_node).apply(cm)
    ConnectLoRA(cm, bare, t.target_node).apply(cm)
    with pytest.raises(GraphsurgeonError, match="already connected"):
        ConnectLoRA(cm, bare, t.target_node).apply(cm)


def test_export_refuses_unconnected_self_wired_matches_peft_elsewhere_has_notes(tmp_path, capsys):
    from peft import PeftModel

    cm = fresh("gpt2")
    t = target(cm)
    InsertLoRA(t, CFG, bare=True).apply(cm)
    with pytest.raises(ExportError, match="not connected"):
        export_folder(cm, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    ConnectLoRA(cm, next(iter(cm.loras)), t.target_node).apply(cm)
    randomize(cm)
    out = tmp_path / "self"
    result = export_folder(cm, out)
    assert result.notes == [] and "adapter_model.safetensors" in result.files
    x = inputs("gpt2")
    with torch.no_grad():
        ours = load_exported(out)(**x)["logits"]
        peft = PeftModel.from_pretrained(build("gpt2"), str(out)).eval()(**x).logits
    assert (ours - cm.run(**x)["logits"]).abs().max() <= 1e-5
    assert (ours - peft).abs().max() <= 1e-5

    cm2 = fresh("gpt2")
    InsertLoRA(target(cm2, "v"), CFG, bare=True).apply(cm2)
    randomize(cm2)
    ConnectLoRA(cm2, next(iter(cm2.loras)), target(cm2, "q").target_node).apply(cm2)
    out2 = tmp_path / "elsewhere"
    result = export_folder(cm2, out2)
    assert len(result.notes) == 1 and "not in the PEFT adapter" in result.notes[0]
    assert "adapter_model.safetensors" not in result.files
    assert "Not in the PEFT adapter" in (out2 / "README.md").read_text()
    with torch.no_grad():
        assert (load_exported(out2)(**x)["logits"] - cm2.run(**x)["logits"]).abs().max() <= 1e-5
    from test_train_script import refused  # main() in-process: exit 2, one line

    assert "cannot be folded into a weight" in refused(out2, "--merge-only", capsys=capsys)
    assert not (out2 / "merged").exists()


def test_recipe_replays_bare_insert_and_connect_on_a_fresh_capture():
    cm = fresh("bert")
    h = History(cm)
    t = target(cm, "v")
    h.do(InsertLoRA(t, CFG, bare=True))
    h.do(ConnectLoRA(cm, next(iter(cm.loras)), t.target_node))
    data = recipe_dict(h)
    assert [s["op"] for s in data["steps"]] == ["insert_bare", "connect"]
    other = fresh("bert")
    replay(other, data)
    assert other.gm.code == cm.gm.code
    assert {p: (b.kind, b.wired_to) for p, b in other.loras.items()} == {p: (b.kind, b.wired_to) for p, b in cm.loras.items()}


def test_session_drop_bare_connect_by_link_and_undo():
    cm = fresh("gpt2")
    session = EditSession(cm)
    attn = "transformer.h.0.attn"
    port = next(i for i, t in session.candidates(attn).items() if t.role == "q" and "/out/" in i)
    session.drop(attn, port, kind="lora", config=CFG)
    path = next(iter(cm.loras))
    assert cm.loras[path].kind == "bare" and session.history_texts[-1].startswith("Add bare LoRA Layer")
    ok = session.connect_candidates(attn, path)
    view = cm.blocks().view(attn)
    q_value = cm.loras[path].target.target_node
    q_links = {l.id for l in view.links if l.value == q_value}
    assert q_links and q_links <= ok
    fused = fused_output(cm)
    assert not any(l.value == fused for l in view.links if l.id in ok)  # 192 wide: not offered
    with pytest.raises(GraphsurgeonError, match="another shape"):
        session.connect(attn, path, next(l.id for l in view.links if l.value == fused))
    entry = session.connect(attn, path, sorted(q_links)[0])
    assert entry.text == f"Connect {path} onto {q_value}" and cm.loras[path].wired_to == q_value
    assert session.connect_candidates(attn, path) == set()  # connected: nothing more to offer
    session.undo()
    assert cm.loras[path].wired_to is None
    every = EditSession(fresh("gpt2"))
    every.drop(attn, port, kind="lora", config=CFG, every_layer=True)
    assert len(every.cm.loras) == 2 and all(b.kind == "bare" for b in every.cm.loras.values())
    every.undo()
    assert not every.cm.loras
