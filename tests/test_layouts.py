"""Every attention layout: q/v column sets against an independent marker-row ground truth, B=0, ΔW and PEFT oracles.

Table-driven over tiny models of PEFT's default-target table (tests/model_zoo.py), each saved with
save_pretrained and captured from its folder the way a user would (eager attention where transformers
refuses SDPA). The ground truth (tests/layout_truth.py) never uses graphsurgeon's analysis.
"""

from __future__ import annotations

import functools
import tempfile

import pytest
import torch

from graphsurgeon.capture import capture
from graphsurgeon.surgery import History, LoRAConfig, add_lora, find_targets, lora_weights
from layout_truth import row_sources
from model_zoo import model_class, save
from surgery_models import randomize, with_delta

peft = pytest.importorskip("peft")
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS  # noqa: E402

# fused layouts first: per-head interleaved (GPT-NeoX, DeBERTa), BLOOM's [heads, 3, head_dim] select, Falcon's grouped
# split on the heads axis, CodeGen's per-group interleave, GPT-2's Conv1D split, MPT's chunk; then separate projections
TYPES = ["gpt_neox", "bloom", "falcon", "codegen", "deberta", "gpt2", "mpt",
         "deberta-v2", "gpt_neo", "mistral", "gemma", "phi"]
TOL = 1e-5
_DIR = tempfile.mkdtemp(prefix="graphsurgeon-layouts-")


@functools.lru_cache(maxsize=None)
def case(model_type: str):
    """(folder, capture) of the tiny model, built and captured once per session (edits are undone)."""
    folder = save(model_type, f"{_DIR}/{model_type}")
    return folder, capture(folder)


def reference(model_type: str) -> torch.nn.Module:
    """The Hugging Face model from the same folder, with the attention implementation the capture used."""
    folder, cm = case(model_type)
    return model_class(model_type).from_pretrained(folder, attn_implementation=cm.attn_implementation).eval()


def first(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else next(iter(out.values())))


@functools.lru_cache(maxsize=None)
def truth(model_type: str) -> list[dict]:
    """Per attention call (= layer), per role: {PEFT target module name: rows it reads}."""
    return row_sources(reference(model_type), PEFT_TARGETS[model_type], {"input_ids": torch.tensor([[5]])})


@pytest.mark.parametrize("model_type", TYPES)
def test_q_v_columns_equal_marker_ground_truth(model_type):
    _, cm = case(model_type)
    targets = find_targets(cm, ("q", "v"))
    calls = truth(model_type)
    assert len(calls) == 2 and [(t.layer, t.role) for t in targets] == [(i, r) for i in range(2) for r in "qv"]
    for t in targets:
        feeds = calls[t.layer][t.role]
        leaf = t.module.rsplit(".", 1)[-1]
        assert list(feeds) == [leaf], f"{t.role} of layer {t.layer} reads {feeds}, the target names {t.module}"
        cols = set(t.columns) if t.columns is not None else set(range(t.out_features))
        assert cols == feeds[leaf] and len(t.columns or cols) == len(cols) == t.out_features


@pytest.mark.parametrize("model_type", TYPES)
def test_lora_b0_delta_w_and_peft_oracles(model_type):
    folder, cm = case(model_type)
    history = History(cm)
    code = cm.gm.code
    original = first(reference(model_type)(**cm.example_inputs))
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4), history=history)
    try:
        cm.gm.graph.lint()
        ours = first(cm.run(**cm.example_inputs))
        assert (ours - original).abs().max() <= TOL  # B = 0: the model is unchanged
        randomize(cm, seed=11)
        ours = first(cm.run(**cm.example_inputs))
        assert (ours - original).abs().max() > 1e-3
        with torch.no_grad():
            by_hand = first(with_delta(reference(model_type), cm)(**cm.example_inputs))
            by_peft = first(_peft_equivalent(model_type, cm)(**cm.example_inputs))
        assert (ours - by_hand).abs().max() <= TOL
        assert (ours - by_peft).abs().max() <= TOL
    finally:
        history.undo()
    assert cm.gm.code == code and not cm.loras


def _peft_equivalent(model_type: str, cm) -> torch.nn.Module:
    """PEFT on the whole modules, with the rank-Σr adapter built here from the ground-truth column sets."""
    groups: dict[str, list] = {}
    for block in cm.loras.values():
        groups.setdefault(block.target.module, []).append(block)
    ranks = {m: sum(b.config.r for b in blocks) for m, blocks in groups.items()}
    alphas = {m: ranks[m] * blocks[0].config.scaling for m, blocks in groups.items()}
    conv1d = any(b.target.kind == "conv1d" for b in cm.loras.values())
    model = peft.get_peft_model(reference(model_type), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=sorted(groups), rank_pattern=ranks, alpha_pattern=alphas,
        fan_in_fan_out=conv1d)).eval()
    params = dict(model.named_parameters())
    calls = truth(model_type)
    with torch.no_grad():
        for module, blocks in groups.items():
            a_key, b_key = (f"base_model.model.{module}.lora_{x}.default.weight" for x in "AB")
            b_full = torch.zeros_like(params[b_key])
            col = 0
            for block in blocks:
                a, b = lora_weights(cm, block.path)
                t = block.target
                known = calls[t.layer][t.role][module.rsplit(".", 1)[-1]]  # the rows this role reads
                rows = list(t.columns) if t.columns is not None else list(range(t.out_features))
                assert set(rows) == known
                b_full[rows, col:col + block.config.r] = b.weight
                col += block.config.r
            params[a_key].copy_(torch.cat([lora_weights(cm, b.path)[0].weight for b in blocks]))
            params[b_key].copy_(b_full)
    return model


def test_eager_fallback_and_sequence_bound_are_said():
    _, bloom = case("bloom")
    assert bloom.attn_implementation == "eager"
    assert bloom.notes[0] == "eager attention: transformers does not support SDPA for BloomForCausalLM"
    assert "eager attention" not in bloom.weights_note  # weights only; the CLI prints the notes as `note:` lines
    _, neo = case("gpt_neo")  # GPT-Neo slices its causal buffer with [:key_length]: seq must stay below 64
    assert neo.dims.bounds["seq"] == 63
    assert "captured with seq ≤ 63" in neo.notes[-1]
    out = next(iter(neo.run(input_ids=torch.randint(0, 100, (1, 63))).values()))
    assert out.shape[:2] == (1, 63)


def test_interleaved_export_model_py_peft_adapter_and_merge(tmp_path):
    """GPT-NeoX's per-head interleaved q and v (different r and alpha) through the export folder."""
    from peft import PeftModel

    from graphsurgeon.export import export_folder
    from test_export import load_exported, max_diff, run_train

    folder, cm = case("gpt_neox")
    history = History(cm)
    add_lora(cm, ("q",), "all", LoRAConfig(r=4, alpha=8), history=history)
    add_lora(cm, ("v",), "all", LoRAConfig(r=2, alpha=6), history=history)
    try:
        assert all(b.target.column_kind == "interleaved set" and b.target.layout for b in cm.loras.values())
        randomize(cm, seed=4)
        out = tmp_path / "out"
        export_folder(cm, out)
        x = {"input_ids": torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(2))}
        with torch.no_grad():
            ours = first(load_exported(out)(**x))
            editor = first(cm.run(**x))
            by_peft = first(PeftModel.from_pretrained(reference("gpt_neox"), str(out)).eval()(**x))
            original = first(reference("gpt_neox")(**x))
        assert max_diff(ours, editor) <= TOL and max_diff(ours, by_peft) <= TOL
        assert max_diff(ours, original) > 1e-3
        result = run_train(out, "--merge-only")
        assert result.returncode == 0, result.stderr
        merged = model_class("gpt_neox").from_pretrained(str(out / "runs" / "export" / "merged")).eval()
        with torch.no_grad():
            assert max_diff(ours, first(merged(**x))) <= TOL
    finally:
        history.undo()
        history.undo()
    assert not cm.loras


class _SharedColumns(torch.nn.Module):
    """A fused projection whose q and k overlap (columns 8-15 feed both): LoRA on q would change k."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.out = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.qkv(x)
        heads = [h[..., a:a + 16].view(b, t, 2, 8).transpose(1, 2) for a in (0, 8, 32)]
        o = torch.nn.functional.scaled_dot_product_attention(*heads)
        return self.out(o.transpose(1, 2).reshape(b, t, 16))


def test_q_that_cannot_be_isolated_is_one_sentence():
    from graphsurgeon.capture import capture_module
    from graphsurgeon.surgery.targets import TargetError, resolve_targets

    cm = capture_module(_SharedColumns(), {"x": torch.randn(2, 5, 16)}, dynamic={"x": {0: "batch", 1: "seq"}})
    with pytest.raises(TargetError) as err:
        resolve_targets(cm, ("q", "v"))
    assert str(err.value) == ("_SharedColumns: the q of its attention (scaled_dot_product_attention) cannot be "
                              "isolated: q and k read the same columns of qkv; LoRA targets: qkv, out "
                              "(pass them to --targets).")
    assert [(t.role, t.column_text) for t in resolve_targets(cm, ("v",))] == [("v", "[32:48]")]


def test_model_without_attention_exits_2_and_writes_nothing(tmp_path, capsys):
    from graphsurgeon.cli import main

    folder = save("rwkv", tmp_path / "rwkv")
    capsys.readouterr()  # save_pretrained's progress bar
    out = tmp_path / "out"
    assert main(["lora", folder, "--targets", "q,v", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["note: eager attention: transformers does not support SDPA for RwkvForCausalLM",
                   "note: seq is fixed at 10: the model's code does not allow another seq length",  # a loop over positions
                   "error: rwkv (RwkvForCausalLM) has no attention (no scaled_dot_product_attention, no matmul → "
                   "softmax → matmul); LoRA targets: key, value, receptance, head (pass them to --targets)."]
    assert not out.exists()
