"""The semantic layer (graph/semantics): roles by dataflow, display names, function groups, layer stacks.

Table-driven over the suite's architectures, with SDPA and eager attention. Ground truth comes from the
Hugging Face model (its q/k/v modules, the column sets its config implies), never from our own analysis.
"""

from __future__ import annotations

import re

import pytest
import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.graph.semantics import Semantics
from graphsurgeon.graph.semantics.source import assigned_names, called_function
from graphsurgeon.surgery import History, LoRAConfig, add_lora
from surgery_models import ARCHS, build, fresh

# arch -> the HF attribute paths of layer 0's q, k, v projections (a fused one: the module and its column ranges)
GROUND_TRUTH = {
    "bert": {"query": "encoder.layer.0.attention.self.query", "key": "encoder.layer.0.attention.self.key",
             "value": "encoder.layer.0.attention.self.value"},
    "roberta": {"query": "encoder.layer.0.attention.self.query", "key": "encoder.layer.0.attention.self.key",
                "value": "encoder.layer.0.attention.self.value"},
    "distilbert": {"query": "transformer.layer.0.attention.q_lin", "key": "transformer.layer.0.attention.k_lin",
                   "value": "transformer.layer.0.attention.v_lin"},
    "gpt2": {"query": ("transformer.h.0.attn.c_attn", range(0, 64)), "key": ("transformer.h.0.attn.c_attn", range(64, 128)),
             "value": ("transformer.h.0.attn.c_attn", range(128, 192))},
    "bigcode": {"query": ("transformer.h.0.attn.c_attn", range(0, 64)), "key": ("transformer.h.0.attn.c_attn", range(64, 68)),
                "value": ("transformer.h.0.attn.c_attn", range(68, 72))},
    "opt": {"query": "model.decoder.layers.0.self_attn.q_proj", "key": "model.decoder.layers.0.self_attn.k_proj",
            "value": "model.decoder.layers.0.self_attn.v_proj"},
    "llama": {"query": "model.layers.0.self_attn.q_proj", "key": "model.layers.0.self_attn.k_proj",
              "value": "model.layers.0.self_attn.v_proj"},
}
FX_NAME = re.compile(r"^getitem(_\d+)?$|^(transformer|model|encoder|decoder|lm)_[a-z0-9_]+_\d+")


def _columns(cols) -> set[int] | None:
    """A column set in either form: (start, stop) or the columns themselves."""
    if cols is None:
        return None
    cols = tuple(cols)
    return set(range(cols[0], cols[1])) if len(cols) == 2 and cols[1] - cols[0] > 1 else set(cols)


@pytest.fixture(scope="module", params=[(a, attn) for a in ARCHS for attn in ("sdpa", "eager")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def captured(request):
    arch, attn = request.param
    model = build(arch)
    model.config._attn_implementation = attn
    return arch, attn, model, capture(model)


def test_qkv_roles_equal_the_hf_modules(captured):
    arch, _attn, _model, cm = captured
    sem = cm.semantics()
    att = next(a for a in sem.attentions if ".0." in a.path + ".")
    for role, truth in GROUND_TRUTH[arch].items():
        op = att.operands[role]
        if isinstance(truth, tuple):
            assert op.projection == truth[0] and _columns(op.columns) == set(truth[1]), role
        else:
            assert op.projection == truth and op.columns is None, role
        assert sem.role(op.target) == role
    assert len(sem.attentions) == 2 and att.out_projection is not None


def test_mask_and_rotary_groups_hold_no_projection(captured):
    arch, _attn, _model, cm = captured
    sem = cm.semantics()
    kinds = {g.kind for g in sem.groups.values()}
    assert kinds & {"causal_mask", "attention_mask"}, kinds
    assert ("rotary" in kinds) == (arch == "llama")
    for g in sem.groups.values():
        if g.kind in ("causal_mask", "attention_mask", "rotary"):
            assert not any(n.op == "get_attr" or n.op == "call_module" for n in g.nodes)
            assert not any(op.target in g.nodes for a in sem.attentions for op in a.operands.values())
            assert all(n.op != "call_function" or "linear" not in str(n.target) for n in g.nodes)
    mask_kind = "causal_mask" if arch in ("gpt2", "bigcode", "opt", "llama") else "attention_mask"
    assert mask_kind in kinds


def test_display_names_are_the_models_and_rebound_as_the_source_rebinds(captured):
    """No fx names and no `_1` suffixes: a name several values carry is one the source rebinds
    (`query_states = query_states.view(...).transpose(1, 2)`), each binding saying which it is in `step`."""
    _arch, _attn, _model, cm = captured
    bg = cm.blocks()
    for path in bg.paths():
        view = bg.view(path)
        by_name: dict[str, set[str]] = {}
        steps: dict[str, str] = {}
        for b in view.blocks:
            for p in b.inputs + b.outputs:
                assert not FX_NAME.search(p.name) and not re.search(r"_\d+$", p.name), (path, p.name, p.value)
                by_name.setdefault(p.name, set()).add(p.value)
                steps[p.value] = p.step
        for name, values in by_name.items():
            if len(values) == 1:
                assert not steps[next(iter(values))]
                continue
            assert sorted(int(steps[v].split(", ")[1].split(" of ")[0]) for v in values) == list(
                range(1, len(values) + 1)), (path, name, {v: steps[v] for v in values})
        assert [r.value for r in view.variables] == [p.value for b in view.blocks for p in b.outputs if p.meta]


def test_top_level_views_are_small(captured):
    arch, _attn, _model, cm = captured
    bg = cm.blocks()
    top = {"gpt2": "transformer", "bigcode": "transformer", "llama": "model", "opt": "model.decoder",
           "bert": "", "roberta": "", "distilbert": ""}[arch]
    assert len(bg.view(top).blocks) <= 8, [b.title for b in bg.view(top).blocks]


def test_layers_are_one_stack(captured):
    arch, _attn, _model, cm = captured
    sem = cm.semantics()
    assert len(sem.stacks) == 1 and len(sem.stacks[0].runs) == 1 and len(sem.stacks[0].runs[0]) == 2


def test_rebound_names_read_as_the_source_rebinds_them():
    """GPT-2's attention: `query_states` is the split's part and, after `query_states = query_states.view(shape_q)
    .transpose(1, 2)`, the transpose's result; its step names the line. Ops are subtitled in PyTorch's spelling."""
    from surgery_models import shared

    cm = shared("gpt2")
    view, sem = cm.blocks().view("transformer.h.0.attn"), cm.semantics()
    carrying = [(b.title, p) for b in view.blocks for p in b.outputs if p.name == "query_states"]
    assert [t for t, _ in carrying] == ["split", "transpose"]
    (_, first), (_, second) = carrying
    assert first.step.startswith("query_states, 1 of 2: query_states, key_states, value_states = ")
    assert second.step.startswith("query_states, 2 of 2: query_states = query_states.view(")
    assert first.meta.shape_text != second.meta.shape_text
    assert [b.subtitle for b in view.blocks if b.kind == "primitive"][:3] == ["Tensor.split", "Tensor.view",
                                                                             "torch.transpose"]
    assert not [b.subtitle for b in view.blocks if b.subtitle.startswith("aten.")]
    rows = [r for r in view.variables if r.name == "query_states"]
    assert [r.step for r in rows] == [first.step, second.step]
    assert sem.statement(cm.blocks().nodes[second.value], "transformer.h.0.attn").startswith("query_states = ")


def test_names_read_like_the_source():
    cm = fresh("gpt2")
    view = cm.blocks().view("transformer.h.0.attn")
    split = next(b for b in view.blocks if b.title == "split")
    assert [p.name for p in split.outputs] == ["query_states", "key_states", "value_states"]
    c_attn = next(b for b in view.blocks if b.title == "c_attn")
    assert c_attn.outputs[0].name == "qkv" and c_attn.role == "qkv_proj"
    core = next(b for b in view.blocks if b.role == "attention")
    assert core.title == "Scaled dot-product attention" and core.outputs[0].name == "attn_output"
    layer = cm.blocks().view("transformer.h.0")
    adds = [b for b in layer.blocks if b.title == "add"]
    assert [b.role for b in adds] == ["residual", "residual"]
    assert all(any(p.label == "residual" for p in b.inputs) for b in adds)
    mlp = cm.blocks().view("transformer.h.0.mlp")
    assert next(b for b in mlp.blocks if b.title == "act").subtitle == "GELU (tanh)"


def test_llama_rotary_and_positions():
    cm = fresh("llama")
    bg = cm.blocks()
    top = bg.view("model")
    assert [b.title for b in top.blocks] == ["inputs", "embed_tokens", "Position ids", "Causal mask", "rotary_emb",
                                             "layers.0 … layers.1 ×2", "norm", "outputs"]
    rotary = next(b for b in top.blocks if b.title == "rotary_emb")
    assert [p.name for p in rotary.outputs] == ["cos", "sin"]
    attn = bg.view("model.layers.0.self_attn")
    rot = next(b for b in attn.blocks if b.role == "rotary")
    assert rot.title == "Rotary embedding" and rot.group == "function"
    assert {p.name for p in rot.inputs} >= {"cos", "sin", "query_states", "key_states"}


def test_lora_values_are_named_by_step():
    cm = fresh("gpt2")
    add_lora(cm, roles=("q",), layers=[0], config=LoRAConfig(r=2, alpha=4))
    bg = cm.blocks()
    inner = bg.view("transformer.h.0.attn.lora_q.lora")
    names = [p.name for b in inner.blocks for p in b.outputs]
    assert {"lora_q.x", "lora_q.Ax", "lora_q.BAx", "lora_q.out"} <= set(names)
    attn = bg.view("transformer.h.0.attn")
    lora = next(b for b in attn.blocks if b.title == "lora_q")
    assert lora.role == "lora" and lora.outputs[0].name == "query_states"  # the sum reads like what it adapts
    assert "query_states_base" in [p.name for p in lora.inputs]


def test_stacks_split_where_layers_differ_and_undo_restores_one():
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=12, n_embd=32, n_head=2, vocab_size=50, n_positions=32)).eval()
    cm = capture(model)
    runs = lambda: [[int(p.rsplit(".", 1)[1]) for p in run] for run in cm.semantics().stacks[0].runs]  # noqa: E731
    assert runs() == [list(range(12))]
    assert [b.title for b in cm.blocks().view("transformer").blocks if b.group == "stack"] == ["h.0 … h.11 ×12"]
    history = History(cm)
    add_lora(cm, roles=("q", "v"), layers=[3], config=LoRAConfig(r=2, alpha=4), history=history)
    assert runs() == [[0, 1, 2], [3], list(range(4, 12))]
    titles = [b.title for b in cm.blocks().view("transformer").blocks if b.title.startswith("h.")]
    assert titles == ["h.0 … h.2 ×3", "h.3", "h.4 … h.11 ×8"]
    assert cm.blocks().breadcrumbs("transformer.h.5.attn")[2] == ("h.4 … h.11 ×8", "transformer.h[4:12]")
    history.undo()
    assert runs() == [list(range(12))]


def test_constants_and_port_labels_read_humanly():
    cm = fresh("bert")
    emb = cm.blocks().view("embeddings")
    statics = {s.name: s.text for b in emb.blocks for s in b.static_inputs}
    assert "9223372036854775807" not in statics.values()
    labels = {p.label for b in emb.blocks for p in b.inputs if b.kind == "primitive"}
    assert "self" not in labels and "input" in labels


def test_source_lines_parse():
    assert assigned_names("query_states, key_states, value_states = self.c_attn(x).split(64, dim=2)") == (
        "query_states", "key_states", "value_states")
    assert assigned_names("outputs: BaseModelOutput = self.model(") == ("outputs",)
    assert assigned_names("if a == b:") == ()
    assert called_function("causal_mask = create_causal_mask(") == "create_causal_mask"
    assert called_function("x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)") is None


def test_tidied_graph_lints_and_runs_like_the_model():
    model = build("llama")
    cm = capture(model)
    cm.gm.graph.lint()
    assert not any("alias" in str(n.target) for n in cm.gm.graph.nodes)
    x = cm.example_inputs
    with torch.no_grad():
        assert (cm.run(**x)["logits"] - model(**x).logits).abs().max() <= 1e-5
    assert Semantics(cm).stacks[0].container == "model.layers"
