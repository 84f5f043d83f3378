"""Details of transformers' source that graphsurgeon relies on, each named, so a release that changes one fails
here, loudly, and not as a silently different model.py (`make test-latest` runs these on the newest release)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from graphsurgeon.export.codegen import model_source
from graphsurgeon.graph.semantics.source import parse_frames

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, shared  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[1] / "graphsurgeon" / "export" / "templates"


def test_module_forward_frames_carry_the_model_source():
    """torch.export keeps one `forward` frame per module the op ran under, with the model's own source line."""
    cm = shared("llama")
    frames = [parse_frames(n.meta.get("stack_trace") or "") for n in cm.gm.graph.nodes if n.op == "call_function"]
    assert any(f and f[-1].function == "forward" and "modeling_llama.py" in f[-1].file for f in frames)


def test_kernels_wraps_rotary_in_a_pass_through_forward():
    """transformers ≥ 5.25 (with its `kernels` dependency) turns apply_rotary_pos_emb into a module whose forward
    only passes the call on (`return func(*args, **kwargs)`); those frames are dropped, so the rotary helper keeps
    HF's name in model.py (it was `func`)."""
    cm = shared("llama")
    traces = [n.meta.get("stack_trace") or "" for n in cm.gm.graph.nodes]
    wrapped = [t for t in traces if "return func(*args, **kwargs)" in t]
    if wrapped:  # the assumption holds: the dropped frame must not reach the names
        assert all("return func(*args, **kwargs)" not in f.code for t in wrapped for f in parse_frames(t))
    assert "def apply_rotary_pos_emb(" in model_source(cm) and "def func(" not in model_source(cm)


def _bare_vs_masked(model, positions) -> float:
    ids = torch.arange(2, 2 + positions.shape[1])[None]
    with torch.no_grad():
        bare = model(input_ids=ids, position_ids=positions)[0]
        masked = model(input_ids=ids, position_ids=positions, attention_mask=torch.ones_like(ids))[0]
    return (bare - masked).abs().max().item()


def test_restarting_positions_without_a_mask_are_packed_sequences():
    """transformers ≥ 5.25: an encoder (no KV cache) given restarting position_ids and no attention_mask attends
    within each run of consecutive positions; a causal LM at its defaults (a KV cache) does not. Capture probes
    this per model (capture/hf_conventions.packs_sequences); model.py writes it with same_sequence()."""
    packed = torch.tensor([[0, 1, 2, 0, 1, 2]])
    assert _bare_vs_masked(build("bert").eval(), packed) > 1e-4
    assert _bare_vs_masked(build("llama").eval(), packed) < 1e-6


def test_packed_sequence_indices_match_transformers():
    """model.py's find_packed_sequence_indices (a template) computes what transformers' masking_utils does."""
    from transformers.masking_utils import find_packed_sequence_indices as theirs

    scope: dict = {"torch": torch}
    exec(compile("import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"  # noqa: S102 - our template
                 + (TEMPLATES / "hf_functions.py").read_text(encoding="utf-8"), "hf_functions", "exec"), scope)
    positions = torch.randint(0, 8, (3, 11), generator=torch.Generator().manual_seed(0))
    positions[1] = torch.arange(11)
    assert torch.equal(scope["find_packed_sequence_indices"](positions), theirs(positions))
