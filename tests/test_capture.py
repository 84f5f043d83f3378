"""Capture and the derived block view, against the real modules they came from."""

import torch
import torch.fx
import pytest
import transformers

from graphsurgeon.capture import capture

ARCHS = {
    "bert": lambda: transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)),
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=64, vocab_size=100,
        max_position_embeddings=64, word_embed_proj_dim=32)),
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        vocab_size=100, max_position_embeddings=64)),
}
ATTENTION = {  # attention composite -> the projections it must hold
    "bert": ("encoder.layer.0.attention.self", ["query", "key", "value"]),
    "gpt2": ("transformer.h.0.attn", ["c_attn", "c_proj"]),
    "opt": ("model.decoder.layers.0.self_attn", ["q_proj", "k_proj", "v_proj", "out_proj"]),
    "llama": ("model.layers.0.self_attn", ["q_proj", "k_proj", "v_proj", "o_proj"]),
}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def saved(request, tmp_path_factory):
    """(arch, HF model, capture of the folder save_pretrained wrote)."""
    torch.manual_seed(0)
    model = ARCHS[request.param]().eval()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, capture(str(folder))


def test_folder_capture_runs_like_the_model_at_other_sizes(saved):
    arch, model, cm = saved
    assert cm.weights == "real"
    ids = torch.randint(0, 100, (3, 7))
    inputs = {"input_ids": ids}
    if "attention_mask" in cm.input_names:
        inputs["attention_mask"] = torch.ones_like(ids)
    with torch.no_grad():
        ref = model(**inputs)
    got = cm.run(**inputs)
    for name, value in got.items():
        torch.testing.assert_close(value, ref[name], rtol=1e-5, atol=1e-5)
    cm.gm.graph.lint()


def test_hierarchy_holds_the_attention_projections(saved):
    arch, model, cm = saved
    path, projections = ATTENTION[arch]
    bg = cm.blocks()
    view = bg.view(path)
    titles = {b.title: b for b in view.blocks}
    for proj in projections:
        assert titles[proj].kind == "composite"
        assert titles[proj].subtitle == type(model.get_submodule(f"{path}.{proj}")).__name__
    assert bg.breadcrumbs(path)[0] == (type(model).__name__, "")
    assert bg.breadcrumbs(path)[-1][1] == path


def test_parameter_counts_equal_the_real_modules(saved):
    arch, model, cm = saved
    bg = cm.blocks()
    for path in bg.paths():
        kind = bg.tree.kinds.get(path)
        if kind == "function":  # a function group holds no parameters of its own
            assert bg.param_count(path) == 0, path
            continue
        if kind == "stack" and "[" in path:  # a run of alike layers: the sum of its layers
            real = sum(p.numel() for layer in bg.children[path] for p in model.get_submodule(layer).parameters())
        else:  # a module, or a whole ModuleList shown as one stack
            real = sum(p.numel() for p in model.get_submodule(path).parameters())
        assert bg.param_count(path) == real, path


def test_table_shapes_and_dtypes_match_a_real_run(saved):
    """Every tensor's TensorMeta (at the example sizes) equals what a real forward produces."""
    arch, model, cm = saved
    bg = cm.blocks()
    seen: dict[str, torch.Tensor] = {}

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                seen[n.name] = out
            return out

    Record(cm.gm).run(*[cm.example_inputs[k] for k in cm.input_names])
    checked = 0
    for path in bg.paths()[:30]:
        for row in bg.view(path).variables:
            if row.value in seen:
                real = seen[row.value]
                assert row.example_shape == "[" + ", ".join(str(d) for d in real.shape) + "]", (path, row)
                assert row.dtype == str(real.dtype).removeprefix("torch.")
                checked += 1
    assert checked > 20


def test_gpt2_attention_view(tiny_gpt2):
    view = tiny_gpt2.blocks().view("transformer.h.0.attn")
    c_attn = view.find("c_attn")
    assert c_attn.subtitle == "Conv1D"
    assert c_attn.param_count == 64 * 192 + 192
    split = view.find("split")
    assert [p.meta.shape_text for p in split.outputs] == ["[batch, seq, 64]"] * 3
    assert {s.name: s.text for s in split.static_inputs} == {"split_size": "64", "dim": "2"}
    # inside the Conv1D: the flattening to [batch*seq, 64] and the addmm with its weight circle
    inner = tiny_gpt2.blocks().view("transformer.h.0.attn.c_attn")
    addmm = inner.find("addmm")
    assert addmm.outputs[0].meta.shape_text == "[batch*seq, 192]"
    assert {s.text for s in addmm.static_inputs} >= {"[64, 192]", "[192]"}


def test_bert_root_inputs_are_integer_tokens(tiny_bert):
    view = tiny_bert.blocks().view("")
    inputs = view.blocks[0]
    assert inputs.kind == "input"
    assert [(p.name, p.meta.shape_text, p.meta.kind) for p in inputs.outputs] == [
        ("input_ids", "[batch, seq]", "int"), ("token_type_ids", "[batch, seq]", "int"),
        ("attention_mask", "[batch, seq]", "int")]  # in the order the model reads them
    outputs = view.blocks[-1]
    assert [p.name for p in outputs.inputs] == ["last_hidden_state", "pooler_output"]
    assert [p.meta.shape_text for p in outputs.inputs] == ["[batch, seq, 64]", "[batch, 64]"]


def test_links_connect_existing_ports(tiny_bert):
    bg = tiny_bert.blocks()
    for path in bg.paths():
        view = bg.view(path)
        ports = {p.id for b in view.blocks for p in b.inputs + b.outputs}
        ids = [b.id for b in view.blocks]
        assert len(ids) == len(set(ids))
        for link in view.links:
            assert link.src in ports and link.dst in ports, (path, link)


def test_meta_capture_then_materialize_equals_a_normal_capture():
    meta = capture("tiny-gpt2", meta=True)
    assert meta.is_meta and meta.weights == "meta"
    assert meta.blocks().view("transformer.h.0.attn").find("c_attn").param_count == 64 * 192 + 192
    meta.materialize()
    assert not meta.is_meta
    normal = capture("tiny-gpt2")
    ids = torch.randint(0, 1000, (2, 5))
    torch.testing.assert_close(meta.run(input_ids=ids)["logits"], normal.run(input_ids=ids)["logits"])
    assert meta.gm.get_parameter("lm_head.weight") is meta.gm.get_parameter("transformer.wte.weight")


def test_meta_capture_of_a_full_size_preset_uses_no_weight_memory():
    cm = capture("bert-base-uncased", meta=True)
    assert cm.blocks().param_count("") == 109_482_240
    assert all(p.is_meta for p in cm.gm.parameters())


def test_module_source_with_example_inputs():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.relu(self.proj(x))

    cm = capture(Tiny(), example_inputs={"x": torch.randn(3, 8)}, dynamic={"x": {0: "batch"}})
    view = cm.blocks().view("")
    assert view.find("proj").outputs[0].meta.shape_text == "[batch, 4]"
    assert view.find("relu").outputs[0].meta.shape_text == "[batch, 4]"


def test_eager_attention_spells_out_softmax(tmp_path):
    cm = capture("tiny-bert", eager_attention=True)
    bg = cm.blocks()
    view = bg.view("encoder.layer.0.attention.self")
    core = [b for b in view.blocks if b.role == "attention"]
    assert [b.title for b in core] == ["Eager attention"] and core[0].group == "function"
    ops = {b.title for b in bg.view(core[0].module_path).blocks}  # the group unboxes into the spelt-out ops
    assert "softmax" in ops or "_softmax" in ops
    assert "scaled_dot_product_attention" not in ops


def test_a_failing_fake_kernel_prints_no_traceback_and_dropout_is_still_recorded(tmp_path, capfd):
    """Mixtral's MoE calls `_grouped_mm`, whose meta kernel takes bf16 only: torch logs a traceback for it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from model_zoo import save

    from graphsurgeon.graph.hf_meta import TRAIN_P, dropout_nodes

    cm = capture(save("mixtral", tmp_path))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed while attempting" not in err, err[:400]
    assert not any("dropout was not recorded" in n for n in cm.notes), cm.notes
    assert all(TRAIN_P in node.meta for _, node in dropout_nodes(cm.gm)), "every dropout place has its train p"
