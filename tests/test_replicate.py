"""Capture one block per layer kind, replicate the rest (issue 22): the replicated graph of a 6-layer model equals a
full capture node for node, runs like it and like the Hugging Face model, and gives the same LoRA targets."""

import pytest
import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.surgery import find_targets

SIZES = dict(vocab_size=128)


def _tiny(arch: str) -> torch.nn.Module:
    """A 6-layer model with seeded weights (hidden 64, 4 heads)."""
    torch.manual_seed(0)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=6, n_head=4, n_positions=64, **SIZES))
    if arch == "bert":
        return tf.BertModel(tf.BertConfig(hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                                          intermediate_size=128, max_position_embeddings=64, **SIZES))
    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, **SIZES)
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**common))
    # alternating sliding-window / full attention layers (layer_types), soft-capping, a kind per layer type
    return tf.Gemma2ForCausalLM(tf.Gemma2Config(head_dim=16, sliding_window=8, **common))


ARCHS = ["gpt2", "llama", "bert", "gemma2"]
_CACHE: dict = {}


def pair(arch: str):
    """(HF model, replicated capture, full capture), built once per session."""
    if arch not in _CACHE:
        model = _tiny(arch).eval()
        _CACHE[arch] = (model, capture(model), capture(model, replicate=False))
    return _CACHE[arch]


def node_table(gm: torch.fx.GraphModule) -> list[tuple]:
    """Each node as (op, target, args with nodes as their positions, shape, dtype, module paths, source, dropout p)."""
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    rows = []
    for n in gm.graph.nodes:
        args = torch.fx.map_arg((n.args, n.kwargs), lambda a: ("node", index[a]))
        val = n.meta.get("val")
        shape = (tuple(str(d) for d in val.shape), val.dtype) if isinstance(val, torch.Tensor) else str(val)
        paths = tuple((k, p, c) for k, (p, c) in (n.meta.get("nn_module_stack") or {}).items())
        rows.append((n.op, str(n.target), repr(args), shape, paths, n.meta.get("stack_trace"), n.meta.get("train_dropout_p")))
    return rows


@pytest.mark.parametrize("arch", ARCHS)
def test_replicated_graph_equals_a_full_capture_node_for_node(arch):
    model, rep, full = pair(arch)
    assert rep.replicated and not full.replicated, rep.notes  # it did replicate; the peer did not
    kept, total = rep.replicated.split(": ")[1].split(" layers")[0].split(" of ")
    assert int(kept) < int(total) == 6
    rep.gm.graph.lint()
    a, b = node_table(rep.gm), node_table(full.gm)
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"node {i}: {x[:4]} != {y[:4]}"
    assert [n.name for n in rep.gm.graph.nodes if n.op in ("get_attr", "placeholder")] == \
        [n.name for n in full.gm.graph.nodes if n.op in ("get_attr", "placeholder")]
    assert list(dict(rep.gm.named_parameters())) == list(dict(full.gm.named_parameters()))
    assert list(dict(rep.gm.named_buffers())) == list(dict(full.gm.named_buffers()))
    assert rep.module_classes == full.module_classes and rep.notes == full.notes
    assert rep.dims.names == full.dims.names and rep.dims.bounds == full.dims.bounds


@pytest.mark.parametrize("arch", ARCHS)
def test_replicated_capture_runs_like_the_full_capture_and_the_model(arch):
    model, rep, full = pair(arch)
    params = dict(model.named_parameters())
    for name, p in rep.gm.named_parameters():  # the real full model's weights are attached, not copies
        assert p is params.get(name, p) and not p.is_meta
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    got, peer = rep.run(input_ids=ids), full.run(input_ids=ids)
    with torch.no_grad():
        ref = model(input_ids=ids)
    for key in got:
        torch.testing.assert_close(got[key], peer[key], rtol=0, atol=0)
        torch.testing.assert_close(got[key], ref[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_replicated_capture_gives_the_same_lora_targets(arch):
    _model, rep, full = pair(arch)

    def described(cm):
        index = {n.name: i for i, n in enumerate(cm.gm.graph.nodes)}
        return [(t.layer, t.role, t.module, t.kind, t.columns, t.in_features, t.out_features, t.attention,
                 index[t.target_node], index[t.input_node]) for t in find_targets(cm)]

    targets = described(rep)
    assert targets == described(full)
    assert sorted({t[0] for t in targets}) == list(range(6))


def test_the_semantic_stack_covers_every_replicated_layer():
    _model, rep, _full = pair("llama")
    stacks = rep.semantics().stacks
    assert [s.container for s in stacks] == ["model.layers"]
    assert stacks[0].layers == [f"model.layers.{i}" for i in range(6)]


def test_layers_unlike_by_their_attributes_are_captured_whole_with_a_note():
    """GPT-2 scaled by 1/(layer index + 1): every layer's `scaling` differs, so each is a kind of its own, nothing
    is replicated and the note says why."""
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=64, vocab_size=128,
                                             scale_attn_by_inverse_layer_idx=True, attn_implementation="eager")).eval()
    cm = capture(model)
    assert not cm.replicated and len(cm.notes) == 1, cm.notes
    assert "no two layers of transformer.h are alike (attn.scaling is 0.25 in layer 0 and 0.125 in layer 1)" in cm.notes[0]


def test_layers_unlike_in_their_graphs_fall_back_to_a_full_capture_with_a_note(monkeypatch):
    """Layers alike by their modules but not in what they compute (every other MLP call doubles its output): the
    isomorphism check refuses, the note names the layers, and the graph is the full capture's."""
    import itertools

    from transformers.models.llama import modeling_llama

    original, calls = modeling_llama.LlamaMLP.forward, itertools.count()

    def forward(self, x):
        y = original(self, x)
        return y * 2.0 if next(calls) % 2 else y

    model = _tiny("llama").eval()
    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", forward)
    cm = capture(model)
    assert not cm.replicated and len(cm.notes) == 1, cm.notes
    assert "could not be replicated (model.layers.0 and model.layers.1 " in cm.notes[0]
    calls = itertools.count()  # the full capture below starts at layer 0 again
    assert node_table(cm.gm) == node_table(capture(model, replicate=False).gm)


def test_a_model_with_forward_hooks_is_captured_whole():
    model = _tiny("llama").eval()
    model.model.layers[1].mlp.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0,))
    cm = capture(model)
    assert not cm.replicated and "model.layers.1.mlp has forward hooks" in cm.notes[0]


def test_progress_reports_each_step():
    model, _rep, _full = pair("llama")
    lines: list[str] = []
    capture(model, progress=lines.append)
    assert lines and lines[0].startswith("capturing LlamaForCausalLM: model.layers: 2 of 6 layers captured")


def test_progress_line_only_on_a_terminal_or_when_asked(monkeypatch, capsys):
    import io

    from graphsurgeon.cli.progress import Progress

    monkeypatch.delenv("GRAPHSURGEON_PROGRESS", raising=False)
    quiet = io.StringIO()
    Progress(quiet)("capturing")
    assert quiet.getvalue() == ""  # a pipe or a test reading stderr gets only notes and errors
    monkeypatch.setenv("GRAPHSURGEON_PROGRESS", "1")
    plain = io.StringIO()
    p = Progress(plain)
    p("capturing x")
    p("replicating y")
    assert [line.split(" … ")[0] for line in plain.getvalue().splitlines()] == ["capturing x", "replicating y"]


def test_a_meta_capture_of_a_folder_replicates_and_materializes_to_the_real_weights(tmp_path):
    model, _rep, full = pair("gpt2")
    model.save_pretrained(tmp_path / "gpt2-6")
    cm = capture(str(tmp_path / "gpt2-6"), meta=True)
    assert cm.replicated == "transformer.h: 2 of 6 layers captured" and cm.is_meta
    cm.materialize()
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(cm.run(input_ids=ids)["logits"], full.run(input_ids=ids)["logits"], rtol=1e-5, atol=1e-5)
