"""Coverage classes of layout (issue 20), each on a tiny hand-written nn.Module whose own outputs are the ground
truth: B = 0 equals the module, random non-zero A, B equal the module with ΔW folded in by hand and PEFT with the
same A, B (1e-5), and the exported model.py (self-checked) equals PEFT at another batch and length."""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from graphsurgeon.capture import capture_module
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
import layout_classes as lc  # noqa: E402
from surgery_models import randomize  # noqa: E402
from test_export import load_exported  # noqa: E402

TOL = 1e-5
pytest.importorskip("peft")


def out(y) -> torch.Tensor:
    return next(iter(y.values())) if isinstance(y, dict) else y


def ids(batch: int, seq: int, seed: int) -> dict:
    return {"input_ids": torch.randint(0, 50, (batch, seq), generator=torch.Generator().manual_seed(seed))}


@functools.lru_cache(maxsize=None)
def exported(block_name: str, roles: tuple, tmp: str, stack: str = "Stack"):
    """(module, capture with LoRA on `roles` and random A, B, export folder); the oracles on the way."""
    module = lc.build(getattr(lc, block_name), getattr(lc, stack))
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    with torch.no_grad():
        original = module(**x)
        add_lora(cm, roles, "all", LoRAConfig(r=2, alpha=4))
        assert (out(cm.run(**x)) - original).abs().max() <= TOL  # B = 0: the module unchanged
        randomize(cm, seed=3)
        ours = out(cm.run(**x))
        assert (ours - original).abs().max() > 1e-3
        assert (ours - lc.with_delta(module, cm)(**x)).abs().max() <= TOL  # ΔW by hand
        assert (ours - lc.with_peft(module, cm)(**x)).abs().max() <= TOL  # PEFT, same A and B
    folder = Path(tmp) / block_name
    result = export_folder(cm, folder)
    assert result.check.startswith("model.py checked against the graph: 2 lengths, random LoRA")
    return module, cm, folder


def test_numbered_children_sequential_and_lists_in_a_block(tmp_path_factory):
    """nn.Sequential MLP, a ModuleList of q/k/v inside the attention, a ModuleList subclass with its own forward:
    valid Python (`self.ffn = nn.Sequential(...)`, `self.qkv[0]`), state-dict keys unchanged, LoRA on q, v and on
    the MLP's first Linear (`--targets ffn.0`, as PEFT's target_modules suffix)."""
    module, cm, folder = exported("SequentialBlock", ("q", "v", "ffn.0"), str(tmp_path_factory.mktemp("seq")))
    assert sorted(b.target.module for b in cm.loras.values()) == sorted(
        f"layers.{i}.{m}" for i in range(2) for m in ("attn.qkv.0", "attn.qkv.2", "ffn.0"))
    code = (folder / "model.py").read_text()
    assert "self.ffn = nn.Sequential(LoRALinear(32, 64, r=2, scaling=2.0), nn.GELU(), nn.Linear(64, 32))" in code
    # (laid out over several lines as ruff format would: the list is longer than a line)
    assert re.search(r"self\.qkv = nn\.ModuleList\(\s*\[LoRALinear\(32, 32.*?\), nn\.Linear\(32, 32\), LoRALinear", code,
                     re.S)
    assert re.search(r"class Gate\w*\(nn\.ModuleList\):", code)
    assert 'self.add_module("1", nn.Linear(32, 32, bias=False))' in code
    assert not re.search(r"self\.\d", code)
    model = load_exported(folder)
    keys = {k for k in model.state_dict() if "lora_" not in k}
    assert keys == set(module.state_dict())
    x = ids(3, 7, 1)
    with torch.no_grad():
        want = lc.with_peft(module, cm)(**x)
        assert (out(model(**x)) - want).abs().max() <= TOL


@pytest.mark.parametrize("block", ["EinsumAttention", "InPlaceAttention", "BmmAttention", "SinkAttention"])
def test_attention_cores_by_structure(block, tmp_path_factory):
    """einsum on both sides of the softmax; div_, += relative-position bias, masked_fill_ in the scores and mul_ on
    the probabilities; bmm with the probabilities as the second operand; a sink column concatenated to the scores
    and sliced off the probabilities: q, k and v are each the module the model calls q, k, v (LoRA on all three),
    and model.py equals PEFT."""
    module, cm, folder = exported(block, ("q", "k", "v"), str(tmp_path_factory.mktemp(block)))
    assert sorted((b.target.role, b.target.module) for b in cm.loras.values()) == sorted(
        (r, f"layers.{i}.{r}") for i in range(2) for r in "qkv")
    assert all(b.target.attention for b in cm.loras.values())  # found behind its attention, not by name
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_a_q_from_routed_experts_is_refused_with_its_reason():
    """q summed back by index_add from the experts a router chose: no one weight holds its columns, and the sentence
    says so (not "no projection feeds it"); k and v of the same attention are still found."""
    from graphsurgeon.errors import GraphsurgeonError
    from graphsurgeon.surgery import resolve_targets

    cm = capture_module(lc.build(lc.RoutedQAttention), ids(2, 10, 0), dynamic={"input_ids": {0: "batch", 1: "seq"}})
    with pytest.raises(GraphsurgeonError) as err:
        resolve_targets(cm, ("q",), "all")
    text = str(err.value)
    assert "the q of its attention (layers.0) cannot be isolated: it is a mixture of experts" in text, text
    assert "summed back by index_add" in text and "\n" not in text
    assert [t.module for t in resolve_targets(cm, ("k", "v"), "all")] == [
        f"layers.{i}.{r}" for i in range(2) for r in "kv"]


def test_a_module_called_with_other_code_per_call(tmp_path_factory):
    """One rotary module called once per layer kind, each call reading its own inv_freq (Gemma 3's layer_type): one
    class cannot run both, so each call is written where it is called, reading that kind's buffer; model.py equals
    PEFT (before: one class for both calls, every local layer rotated with the global frequencies)."""
    module, cm, folder = exported("KindRotaryModel", ("q", "v"), str(tmp_path_factory.mktemp("kinds")))
    code = (folder / "model.py").read_text()
    assert "self.rotary.local_inv_freq" in code and "self.rotary.global_inv_freq" in code
    assert not re.search(r"class KindRotary\d", code)
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_a_no_op_cast_read_by_two_calls_written_inline(tmp_path_factory):
    """A rotary module called once per layer kind (its calls written inline) whose buffer is read through a no-op
    `.to(float32)`: the second call reads the first call's cast (as tracing records it), and model.py writes it
    (was "read before it is written"); model.py equals PEFT."""
    module, cm, folder = exported("CastKindRotaryModel", ("q", "v"), str(tmp_path_factory.mktemp("castkinds")))
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_hf_rotary_per_layer_type_and_a_prediction_head(tmp_path):
    """ModernBERT-decoder: one rotary module called once per layer type (its own theta each) and a causal LM whose
    LM head is the last Linear after a prediction head (dense, norm): model.py equals PEFT (the HF model with the
    same A, B), and `logits_to_keep=1` slices before the prediction head as HF does (it equals HF's)."""
    import transformers as tf

    from graphsurgeon.capture import capture

    config = tf.ModernBertDecoderConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, vocab_size=64, max_position_embeddings=32,
                                        layer_types=["full_attention", "sliding_attention"], local_attention=8,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    torch.manual_seed(0)
    model = tf.ModernBertDecoderForCausalLM(config).eval()
    cm = capture(model)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
    randomize(cm, seed=5)
    export_folder(cm, tmp_path / "out")
    code = (tmp_path / "out" / "model.py").read_text()
    assert ".sliding_attention_inv_freq" in code and ".full_attention_inv_freq" in code
    ours, by_peft = load_exported(tmp_path / "out"), lc.with_peft(model, cm)
    x = ids(3, 11, 4)  # longer than the sliding window
    with torch.no_grad():
        assert (ours(**x).logits - by_peft(**x).logits).abs().max() <= TOL
        last = ours(**x, logits_to_keep=1).logits
        assert last.shape[1] == 1 and (last - by_peft(**x, logits_to_keep=1).logits).abs().max() <= TOL


# model type -> (class, tiny config, the attributes its q, k, v projections have: the model's own names). T5's
# `scores += position_bias` was recognised before (InPlaceAttention covers an in-place relative bias, far cheaper)
HF = {
    "xlm": ("XLMWithLMHeadModel", dict(n_layers=2, emb_dim=32, n_heads=4, vocab_size=50, max_position_embeddings=32),
            ("q_lin", "k_lin", "v_lin")),  # scores.masked_fill_(mask, min) between the products
}


@pytest.mark.parametrize("model_type", sorted(HF))
def test_hf_attention_with_in_place_score_ops(model_type, tmp_path):
    import peft
    import transformers as tf

    from graphsurgeon.capture import capture
    from surgery_models import with_delta

    cls, config, names = HF[model_type]
    torch.manual_seed(0)
    model = getattr(tf, cls)(tf.CONFIG_MAPPING[model_type](**config)).eval()
    cm = capture(model)
    x = ids(2, 9, 2)
    with torch.no_grad():
        original = out(model(**x))
        add_lora(cm, ("q", "k", "v"), "all", LoRAConfig(r=2, alpha=4))
        assert sorted(b.target.module.rsplit(".", 1)[1] for b in cm.loras.values()) == sorted(names * 2)
        assert all(b.target.attention for b in cm.loras.values())  # found behind its attention, not by name
        assert (out(cm.run(**x)) - original).abs().max() <= TOL
        randomize(cm, seed=5)
        ours = out(cm.run(**x))
        assert (ours - original).abs().max() > 1e-3
        assert (ours - out(with_delta(copy.deepcopy(model), cm)(**x))).abs().max() <= TOL  # ΔW by hand
        by_peft = lc.with_peft(model, cm)  # PEFT, same A and B
        assert isinstance(by_peft, peft.PeftModel) and (ours - out(by_peft(**x))).abs().max() <= TOL
    export_folder(cm, tmp_path / "out")
    y = ids(3, 6, 4)
    with torch.no_grad():
        assert (out(load_exported(tmp_path / "out")(**y)) - out(by_peft(**y))).abs().max() <= TOL


def test_pointwise_conv_projections_as_peft_adapts_them(tmp_path_factory):
    """q, k, v as kernel-1 nn.Conv1d over [batch, channels, seq]: LoRA on each equals PEFT's conv LoRA with the same
    A, B; model.py wraps them (LoRAConv1x1); the PEFT adapter (A [r, in, 1], B [out, r, 1]) loads into PEFT and
    gives model.py's outputs; folding ΔW into the [out, in, 1] weight is the hand-folded weight."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from graphsurgeon.export.templates import lora_math
    from graphsurgeon.surgery import lora_weights

    module, cm, folder = exported("ConvAttention", ("q", "k", "v"), str(tmp_path_factory.mktemp("conv")))
    assert {b.target.kind for b in cm.loras.values()} == {"conv1x1"}
    code = (folder / "model.py").read_text()
    assert "self.q = LoRAConv1x1(32, 32, 1, r=2, scaling=2.0)" in code
    adapter = load_file(str(folder / "adapter_model.safetensors"))
    assert adapter["base_model.model.layers.0.q.lora_A.weight"].shape == (2, 32, 1)
    assert adapter["base_model.model.layers.0.q.lora_B.weight"].shape == (32, 2, 1)
    x = ids(3, 7, 1)
    with torch.no_grad():
        ours = out(load_exported(folder)(**x))
        peft_model = PeftModel.from_pretrained(copy.deepcopy(module), str(folder)).eval()
        by_adapter = peft_model.get_base_model()(**x)  # LoRA injected; a plain module takes no attention_mask
        assert (ours - by_adapter).abs().max() <= TOL
        by_hand = lc.with_delta(module, cm)
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            folded = lora_math.fold(module.get_submodule(block.target.module).weight, dict(
                A=a.weight, B=b.weight, scaling=block.config.scaling, columns=None), fan_in_fan_out=False)
            assert (folded - by_hand.get_submodule(block.target.module).weight).abs().max() <= TOL


def test_a_grouped_pointwise_conv_is_refused_in_one_sentence():
    """groups > 1: PEFT's B is grouped, which this LoRA cannot hold; one sentence naming the module (the ungrouped
    k and v of the same model are still adapted)."""
    from graphsurgeon.errors import GraphsurgeonError

    module = lc.build(lc.GroupedConvAttention)
    cm = capture_module(module, ids(2, 10, 0), dynamic={"input_ids": {0: "batch", 1: "seq"}})
    with pytest.raises(GraphsurgeonError) as err:
        add_lora(cm, ("q",), "all", LoRAConfig(r=2, alpha=4))
    text = str(err.value)
    assert "layers.0.q is a grouped 1×1 convolution (groups=2)" in text and "\n" not in text and not cm.loras
    add_lora(cm, ("k", "v"), "all", LoRAConfig(r=2, alpha=4))
    assert sorted(b.target.module for b in cm.loras.values()) == [f"layers.{i}.{r}" for i in range(2) for r in "kv"]


def test_slices_of_a_fused_pointwise_conv(tmp_path):
    """q and v as channel slices of one kernel-1 conv (qkv(x).chunk(3, dim=1)): the graph equals the module with
    ΔW folded into those rows of the [3·D, D, 1] weight by hand, and the exported adapter (one rank-2r PEFT conv
    LoRA on qkv) loaded by PEFT equals model.py."""
    from peft import PeftModel

    from graphsurgeon.surgery import lora_weights

    module = lc.build(lc.FusedConvAttention)
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
    assert sorted((b.target.module, b.target.columns[0], len(b.target.columns)) for b in cm.loras.values()) == [
        (f"layers.{i}.qkv", c, lc.D) for i in range(2) for c in (0, 2 * lc.D)]
    randomize(cm, seed=7)
    by_hand = copy.deepcopy(module)
    with torch.no_grad():
        for path, block in cm.loras.items():
            a, b = lora_weights(cm, path)
            w = by_hand.get_submodule(block.target.module).weight
            w[list(block.target.columns), :, 0] += (b.weight @ a.weight) * block.config.scaling
        ours = out(cm.run(**x))
        assert (ours - by_hand(**x)).abs().max() <= TOL and (ours - module(**x)).abs().max() > 1e-3
    export_folder(cm, tmp_path / "out")
    y = ids(3, 7, 1)
    with torch.no_grad():
        by_adapter = PeftModel.from_pretrained(copy.deepcopy(module), str(tmp_path / "out")).eval()
        assert (out(load_exported(tmp_path / "out")(**y)) - by_adapter.get_base_model()(**y)).abs().max() <= TOL


def test_a_layer_called_twice_shares_its_lora(tmp_path_factory):
    """One layer's weights used by every layer (ALBERT): its q and v each get one LoRA that every call applies, as
    PEFT adapts a shared module; model.py is valid Python (no `self.(lora_A)`), wraps the projections once
    (LoRALinear) and equals PEFT with the same A, B."""
    module, cm, folder = exported("SdpaAttention", ("q", "v"), str(tmp_path_factory.mktemp("shared")), "SharedStack")
    assert sorted(b.target.module for b in cm.loras.values()) == ["layers.0.q", "layers.0.v"]
    code = (folder / "model.py").read_text()
    assert "self.q = LoRALinear(32, 32, r=2, scaling=2.0)" in code and "self.(" not in code
    assert "class LinearBlock" not in code and "AddLoRALayer" not in code
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


@pytest.mark.parametrize("block, stack", [("SdpaAttention", "SharedStack"), ("GlobalLocalAttention", "Stack")])
def test_undo_and_redo_of_a_lora_on_a_layer_called_twice(block, stack):
    """Undo of LoRA on a shared layer (ALBERT), or on projections called twice in one attention (PegasusX), removes
    every call's insertion and the LoRA module (the graph is the module again); redo gives back the same weights
    at every call."""
    from graphsurgeon.surgery.history import History
    from graphsurgeon.surgery.history import add_lora as add_undoable

    module = lc.build(getattr(lc, block), getattr(lc, stack))
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    history, before = History(cm), len(cm.gm.graph.nodes)
    add_undoable(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4), history=history)
    randomize(cm, seed=3)
    paths = sorted(cm.loras)
    with torch.no_grad():
        adapted = out(cm.run(**x))
        history.undo()
        assert not cm.loras and len(cm.gm.graph.nodes) == before
        assert not [n for n, _ in cm.gm.named_modules() if "lora" in n]
        cm.gm.graph.lint()
        assert (out(cm.run(**x)) - module(**x)).abs().max() <= TOL
        history.redo()
        assert sorted(cm.loras) == paths and "layers.0.lora_v" in paths
        assert (out(cm.run(**x)) - adapted).abs().max() <= TOL


def test_two_attention_maps_over_one_projection(tmp_path_factory):
    """q and k read by two attention calls, v split in halves between them (DiffLlama): one LoRA on the whole q and
    one on the whole v per layer (the halves cover v), as PEFT adapts them; model.py equals PEFT."""
    module, cm, folder = exported("TwoMapAttention", ("q", "v"), str(tmp_path_factory.mktemp("twomap")))
    assert sorted((b.target.module, b.target.columns) for b in cm.loras.values()) == sorted(
        (f"layers.{i}.{r}", None) for i in range(2) for r in "qv")
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_a_projection_called_twice_in_one_attention(tmp_path_factory):
    """q, k, v each run on the tokens and on global states within one attention call (PegasusX): one LoRA per
    projection, whole (no columns), applied at both calls as PEFT adapts it; model.py equals PEFT."""
    module, cm, folder = exported("GlobalLocalAttention", ("q", "k", "v"), str(tmp_path_factory.mktemp("twice")))
    assert sorted((b.target.module, b.target.columns) for b in cm.loras.values()) == sorted(
        (f"layers.{i}.{r}", None) for i in range(2) for r in "qkv")
    code = (folder / "model.py").read_text()
    assert "class LinearBlock" not in code
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_a_lora_dropped_on_one_call_is_added_at_every_call(tmp_path):
    """A LoRA dropped in the editor on one of the two calls of a bias-free q (on the global states, not the tokens):
    a LoRA belongs to its module, so both calls carry it, one lora_A/lora_B, as PEFT and the merged weights apply
    it: the graph, model.py (self-checked) and the merged weights equal PEFT with the same A, B; the status text
    says so; undo removes both calls (the module again), redo brings both back; deleting it at one call deletes
    both; the recipe records one step and replays to the same graph."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from graphsurgeon.surgery import lora_weights
    from graphsurgeon.surgery.recipe import recipe_dict, replay
    from graphsurgeon.ui.operate.session import EditSession

    module = lc.build(lc.BiasFreeGlobalLocal)
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    session, before = EditSession(cm), cm.gm.code
    ids_of = {i: t for i, t in session.candidates("layers.0").items()
              if t.module == "layers.0.q" and t.input_node != "embedding"}  # q's call on the global states
    assert ids_of, session.candidates("layers.0")
    entry = session.drop("layers.0", next(iter(ids_of)), config=LoRAConfig(r=2, alpha=4))
    assert entry.text.endswith("q runs 2 times per forward: LoRA added at both calls — one adapter, as PEFT and "
                               "merged weights apply it")
    assert list(cm.loras) == ["layers.0.lora_q"]
    adds = [n for n in cm.gm.graph.nodes if n.target is torch.ops.aten.add.Tensor
            and list(n.meta["nn_module_stack"])[-1] == "layers.0.lora_q"]
    assert len(adds) == 2  # one insertion per call, one LoRA module
    assert [n for n, _ in cm.gm.named_modules() if n.endswith("lora_A")] == ["layers.0.lora_q.lora.lora_A"]
    randomize(cm, seed=3)
    y = ids(3, 7, 1)
    with torch.no_grad():
        peft = lc.with_peft(module, cm)
        adapted = out(cm.run(**y))
        assert (adapted - out(peft(**y))).abs().max() <= TOL and (adapted - module(**y)).abs().max() > 1e-3
        result = export_folder(cm, tmp_path / "out")
        assert result.check.startswith("model.py checked against the graph: 2 lengths, random LoRA")
        assert (out(load_exported(tmp_path / "out")(**y)) - out(peft(**y))).abs().max() <= TOL
        by_adapter = PeftModel.from_pretrained(copy.deepcopy(module), str(tmp_path / "out")).eval()
        assert (out(by_adapter.get_base_model()(**y)) - out(peft(**y))).abs().max() <= TOL
    blocks = json.loads((tmp_path / "out" / "surgery.json").read_text())["loras"]
    assert [b["target"]["module"] for b in blocks] == ["layers.0.q"]  # folded once, as train.py's merge reads it
    a, b = (w.weight.detach().clone() for w in lora_weights(cm, "layers.0.lora_q"))
    from test_train_script import import_train  # train.py --merge-only of a plain nn.Module's export (no config.json)

    import_train(tmp_path / "out").main(["--merge-only"])
    merged = load_file(tmp_path / "out" / "runs" / "export" / "merged" / "model.safetensors")["layers.0.q.weight"]
    assert not (tmp_path / "out" / "runs" / "export" / "merged" / "config.json").exists()
    want = copy.deepcopy(peft).merge_and_unload().state_dict()["layers.0.q.weight"]
    assert (merged - want).abs().max() <= TOL and (merged - module.state_dict()["layers.0.q.weight"]).abs().max() > 1e-4

    recipe = recipe_dict(session.history)
    assert [s["op"] for s in recipe["steps"]] == ["insert"]  # recorded once
    edited = cm.gm.code
    session.undo()
    cm.gm.graph.lint()
    assert not cm.loras and cm.gm.code == before and not [n for n, _ in cm.gm.named_modules() if "lora" in n]
    with torch.no_grad():
        assert (out(cm.run(**y)) - module(**y)).abs().max() <= TOL
    session.redo()
    assert cm.gm.code == edited and torch.equal(lora_weights(cm, "layers.0.lora_q")[1].weight, b)
    with torch.no_grad():
        assert (out(cm.run(**y)) - adapted).abs().max() <= TOL
    deleted = session.delete("layers.0.lora_q")
    assert "LoRA removed at both calls" in deleted.text
    assert not cm.loras and cm.gm.code == before
    session.undo()
    assert cm.gm.code == edited
    with torch.no_grad():
        assert (out(cm.run(**y)) - adapted).abs().max() <= TOL
    session.edit("layers.0.lora_q", r=4)  # a new r: new A, B (B = 0) at both calls, one LoRA module
    cm.gm.graph.lint()
    assert [n.meta["val"].shape[-1] for n in cm.gm.graph.nodes if n.name.startswith("layers_0_lora_q_A")] == [4, 4]
    with torch.no_grad():
        assert (out(cm.run(**y)) - module(**y)).abs().max() <= TOL
    session.undo()
    assert cm.gm.code == edited
    with torch.no_grad():
        assert (out(cm.run(**y)) - adapted).abs().max() <= TOL

    again = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    replay(again, recipe)
    assert again.gm.code == edited and list(again.loras) == ["layers.0.lora_q"]
    with torch.no_grad():
        for w, want_w in zip(lora_weights(again, "layers.0.lora_q"), (a, b)):
            w.weight.copy_(want_w)
        assert (out(again.run(**y)) - adapted).abs().max() <= TOL


def test_a_call_that_cannot_take_the_lora_refuses_it_at_every_call():
    """A fused qkv called twice, split into q/k/v at one call only: a LoRA on q's columns is refused in one sentence
    naming the module and the other call (never a LoRA on one call only), the graph unchanged; the whole qkv
    dropped on its second call in the editor is added at both calls."""
    from graphsurgeon.graph.lora_sites import lora_sites
    from graphsurgeon.surgery import find_targets, insert_lora
    from graphsurgeon.ui.operate.session import EditSession
    from graphsurgeon.validate.diagnostics import ValidationError

    module = lc.build(lc.FusedTwice)
    cm = capture_module(module, ids(2, 10, 0), dynamic={"input_ids": {0: "batch", 1: "seq"}})
    code = cm.gm.code
    q = next(t for t in find_targets(cm) if t.role == "q" and t.layer == 0)
    with pytest.raises(ValidationError) as info:
        insert_lora(cm, q, LoRAConfig(r=2))
    message = str(info.value)
    assert "layers.0.qkv runs 2 times per forward" in message and "its call 2 (linear_1)" in message, message
    assert message.endswith("adapt the whole projection (--targets qkv) instead.") and message.count(". ") == 0
    with pytest.raises(ValidationError, match="layers.0.qkv runs 2 times per forward"):
        add_lora(cm, ("q",), "all", LoRAConfig(r=2))
    assert not cm.loras and cm.gm.code == code
    session = EditSession(cm)
    entry = session.drop("layers.0", "m:layers.0.qkv/out/linear_1", config=LoRAConfig(r=2))  # the globals' call
    assert "qkv runs 2 times per forward: LoRA added at both calls" in entry.text
    assert sorted(b.target.target_node for b in lora_sites(cm)) == ["linear", "linear_1"]
    randomize(cm, seed=3)
    y = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(cm.run(**y)) - out(lc.with_peft(module, cm)(**y))).abs().max() <= TOL
    session.undo()
    assert cm.gm.code == code


def test_a_no_op_cast_crossing_modules(tmp_path_factory):
    """A router returns `w.to(x.dtype).float()` (no-op casts) and a sibling module reads it (ErgoMoE): the cast and
    its input are one value wherever it is read — model.py is written (no "read before it is written") and equals
    PEFT."""
    module, cm, folder = exported("RoutedBlock", ("q", "v"), str(tmp_path_factory.mktemp("routed")))
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_a_layer_peft_cannot_adapt_is_refused_in_one_sentence():
    """q is a QuantLinear (not a torch.nn.Linear): exact here, but its adapter could never load in PEFT, so LoRA on
    it is refused in one sentence naming the module and its class; v, an nn.Linear subclass, is adapted."""
    from graphsurgeon.errors import GraphsurgeonError

    module = lc.build(lc.QuantAttention)
    cm = capture_module(module, ids(2, 10, 0), dynamic={"input_ids": {0: "batch", 1: "seq"}})
    with pytest.raises(GraphsurgeonError) as err:
        add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
    text = str(err.value)
    assert "layers.0.q is a QuantLinear, a layer class PEFT cannot adapt" in text and "\n" not in text
    assert not cm.loras
    add_lora(cm, ("v",), "all", LoRAConfig(r=2, alpha=4))
    assert sorted(b.target.module for b in cm.loras.values()) == ["layers.0.v", "layers.1.v"]


def test_a_kv_cache_after_a_no_op_cast(tmp_path_factory):
    """A causal LM whose input, q and k are normalised by a module ending in `.type_as(x)` (NanoChat): the KV cache
    keeps the key as the attention reads it (no KeyError), q and v are LoRALinear (not a class of their own), a cast
    nobody reads leaks no value out of its modules (the layers return only the hidden state: one loop), and model.py
    equals PEFT."""
    tmp = str(tmp_path_factory.mktemp("normed"))
    module, cm, folder = exported("NormedAttention", ("q", "v"), tmp, "TinyForCausalLM")
    code = (folder / "model.py").read_text()
    assert "self.kv_cache.update(" in code and "self.q = LoRALinear(32, 32, r=2, scaling=2.0)" in code
    assert re.search(r"for layer in self\.layers:\n\s+(\w+) = layer\(\1\)", code)
    x = ids(3, 7, 1)
    with torch.no_grad():
        assert (out(load_exported(folder)(**x)) - lc.with_peft(module, cm)(**x)).abs().max() <= TOL
