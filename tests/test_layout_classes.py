"""Coverage classes of layout (issue 20), each on a tiny hand-written nn.Module whose own outputs are the ground
truth: B = 0 equals the module, random non-zero A, B equal the module with ΔW folded in by hand and PEFT with the
same A, B (1e-5), and the exported model.py (self-checked) equals PEFT at another batch and length."""

from __future__ import annotations

import functools
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
def exported(block_name: str, roles: tuple, tmp: str):
    """(module, capture with LoRA on `roles` and random A, B, export folder); the oracles on the way."""
    module = lc.build(getattr(lc, block_name))
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
    assert re.search(r"self\.qkv = nn\.ModuleList\(\[LoRALinear\(32, 32.*\), nn\.Linear\(32, 32\), LoRALinear", code)
    assert re.search(r"class Gate\w*\(nn\.ModuleList\):", code) and "self.add_module(\"1\", nn.Linear(32, 32, bias=False))" in code
    assert not re.search(r"self\.\d", code)
    model = load_exported(folder)
    keys = {k for k in model.state_dict() if "lora_" not in k}
    assert keys == set(module.state_dict())
    x = ids(3, 7, 1)
    with torch.no_grad():
        want = lc.with_peft(module, cm)(**x)
        assert (out(model(**x)) - want).abs().max() <= TOL
