"""Layouts whose generated model.py compiled but failed when run (issue 20: olmo / helium, luke / mobilebert /
neomme, fnet, funnel), differed from the graph (mt5) or named its outputs otherwise (xlnet), each on a tiny
hand-written module (tests/layout_runs.py) whose own outputs are the ground truth: B = 0 equals the module, random
non-zero A, B equal PEFT with the same A, B (1e-5), and the exported model.py (self-checked) equals PEFT at another
batch and length."""

from __future__ import annotations

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
import layout_runs as lr  # noqa: E402
from surgery_models import randomize  # noqa: E402
from test_export import load_exported  # noqa: E402

TOL = 1e-5
pytest.importorskip("peft")


def ids(batch: int, seq: int, seed: int) -> dict:
    return {"input_ids": torch.randint(0, lr.VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))}


def export(module, roles: tuple, folder: Path):
    """(capture with LoRA on `roles`, random A and B, export folder); B = 0 and PEFT checked on the way."""
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    with torch.no_grad():
        original = module(**x)
        add_lora(cm, roles, "all", LoRAConfig(r=2, alpha=4))
        assert (cm.run(**x)["output"] - original).abs().max() <= TOL  # B = 0: the module unchanged
        randomize(cm, seed=3)
        ours = cm.run(**x)["output"]
        assert (ours - original).abs().max() > 1e-3
        assert (ours - lc.with_peft(module, cm)(**x)).abs().max() <= TOL  # PEFT, same A and B
    result = export_folder(cm, folder)
    assert result.check.startswith("model.py checked against the graph: 2 lengths, random LoRA")
    return cm, folder


def equals_peft(module, cm, folder: Path) -> None:
    """model.py at another batch and length equals PEFT with the graph's A, B."""
    x = ids(3, 7, 1)
    with torch.no_grad():
        got = load_exported(folder)(**x)["output"]
        assert (got - lc.with_peft(module, cm)(**x)).abs().max() <= TOL


def test_projections_reading_a_norm_that_ends_in_a_cast(tmp_path):
    """OLMo / Helium: the norm's last op is `.to(input dtype)`, a cast that changes nothing in float32, and q, v
    have no bias: each is still the wrapped layer (`LoRALinear(..., bias=False)`), not a class of its own that
    `add_lora` cannot rebuild (before: "'LinearBlock' object has no attribute 'bias'" when model.py ran), and the
    norm's output is not returned by the layer as well."""
    module = lc.build(lr.CastNormAttention)
    cm, folder = export(module, ("q", "v"), tmp_path / "out")
    code = (folder / "model.py").read_text()
    assert "self.q = LoRALinear(32, 32, bias=False, r=2, scaling=2.0)" in code
    assert "self.k = nn.Linear(32, 32, bias=False)" in code and "class LinearBlock" not in code
    assert not re.search(r"^class \w+\(nn\.Module\):\n    \"\"\"\w+ \(layers\.0\)", code, re.MULTILINE)  # one layer class
    layer = code[code.index("class CastNormAttention("):]
    layer = layer[:layer.index("\n\n\nclass ")]  # the norm's output is no output of the layer (only its q, k, v read it)
    assert re.search(r"\n        return \w+\Z", layer), layer
    equals_peft(module, cm, folder)


def test_heads_tied_to_the_embedding_and_read_as_tensors(tmp_path):
    """MobileBERT / NeoMME / LUKE: modules whose every tensor is shared with another (a head whose weight is the
    embedding, read as `decoder.weight`; a head never called) are built, and tie_weights shares the tensors into
    them (before: "… has no attribute `decoder`"); the state dict's keys are the module's."""
    module = lr.seeded(lr.TiedHeads)
    cm, folder = export(module, ("q", "v"), tmp_path / "out")
    code = (folder / "model.py").read_text()
    assert "self.decoder = nn.Linear(32, 50)" in code and "self.entity_head = nn.Linear(32, 50, bias=False)" in code
    model = load_exported(folder)
    assert {k for k in model.state_dict() if "lora_" not in k} == set(module.state_dict())
    assert model.decoder.weight is model.emb.weight and model.entity_head.weight is model.emb.weight
    assert model.decoder.bias is model.bias
    equals_peft(module, cm, folder)


def test_fft_mixing_read_through_a_property(tmp_path):
    """FNet: `torch.fft.fftn(x, dim=(1, 2)).real` — aten's fft_fftn is written as torch.fft.fftn and `.real` as
    the property it is (before: `.real()`, "'Tensor' object is not callable"); LoRA on the Linear layers."""
    module = lc.build(lr.FourierMixing)
    cm, folder = export(module, ("proj", "ffn"), tmp_path / "out")
    code = (folder / "model.py").read_text()
    assert re.search(r"torch\.fft\.fftn\(.+?, None, \[1, 2\]\)\.real\b(?!\()", code) and "torch.ops." not in code
    equals_peft(module, cm, folder)


def test_two_states_of_one_call_under_one_name(tmp_path, monkeypatch):
    """Funnel: both states an encoder returns are read from one variable (`encoder_outputs[0]`,
    `encoder_outputs[1][1]`), so both are called `encoder_outputs` (forced here: this module's source names them
    apart); the second gets its own name, and no `residual = encoder_outputs` is written before the call that
    binds it (before: "UnboundLocalError: … 'encoder_outputs'")."""
    from graphsurgeon.export.codegen import names

    plain = names.value_name
    monkeypatch.setattr(names, "value_name", lambda cm, node, path: "encoder_outputs"
                        if plain(cm, node, path).startswith("encoder_outputs") else plain(cm, node, path))
    module = lr.seeded(lr.TwoStatesModel)
    cm, folder = export(module, ("q", "v"), tmp_path / "out")
    code = (folder / "model.py").read_text()
    assert "encoder_outputs, encoder_outputs_2 = self.encoder(" in code and "residual = encoder_outputs" not in code
    equals_peft(module, cm, folder)


def test_an_activation_written_as_ops_stays_its_ops(tmp_path):
    """mT5: gelu_new's eight ops are no nn.GELU(approximate="tanh") (close, not equal: an ulp that large logits
    grew to 1.6e-5 and the self-check refused); model.py writes the ops, and its activation equals the module's
    bit for bit; the export's self-check passes on logits of tens."""
    module = lr.seeded(lr.GatedTanhGELUModel)
    with torch.no_grad():
        module.head.weight.mul_(40.0)
        module.emb.weight.mul_(20.0)
        assert module(**ids(2, 10, 0)).abs().max() > 10
    cm, folder = export(module, ("q", "v", "wi_0"), tmp_path / "out")
    code = (folder / "model.py").read_text()
    assert "nn.GELU" not in code and "torch.tanh(" in code
    probe = torch.linspace(-8.0, 8.0, 2001)
    with torch.no_grad():
        assert torch.equal(load_exported(folder).act(probe), module.act(probe))
    equals_peft(module, cm, folder)


def test_outputs_under_one_key_keep_their_names(tmp_path):
    """XLNet: {"logits": tensor, "mems": (tensor, tensor)} — the graph's outputs are named logits, mems_0, mems_1
    (before: output0…2, and the self-check found no 'logits' in model.py); model.py returns them under those names,
    equal to the module's."""
    module = lr.seeded(lr.WithMems)
    x = ids(2, 10, 0)
    cm = capture_module(module, x, dynamic={"input_ids": {0: "batch", 1: "seq"}})
    assert cm.output_names == ["logits", "mems_0", "mems_1"]
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=2, alpha=4))
    randomize(cm, seed=3)
    result = export_folder(cm, tmp_path / "out")
    assert result.check.startswith("model.py checked against the graph: 2 lengths, random LoRA")
    y = ids(3, 7, 1)
    with torch.no_grad():
        got, want = load_exported(tmp_path / "out")(**y), lc.with_peft(module, cm)(**y)
    assert sorted(got.keys()) == ["logits", "mems_0", "mems_1"]
    assert (got["logits"] - want["logits"]).abs().max() <= TOL
    for i in range(2):
        assert (got[f"mems_{i}"] - want["mems"][i]).abs().max() <= TOL
