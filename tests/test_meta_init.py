"""capture/meta_init: torch's initialisers skip meta tensors only; a model built on meta keeps its tied weights."""

from __future__ import annotations

import torch
from torch import nn

from graphsurgeon.capture.meta_init import skip_meta_init


def test_meta_tensors_skipped_cpu_tensors_initialised_as_before():
    torch.manual_seed(3)
    expected = nn.Linear(8, 4).weight.detach().clone()
    with skip_meta_init():
        with skip_meta_init():  # nested: still patched, restored only by the outer block
            meta = nn.Linear(8, 4, device="meta")
        torch.manual_seed(3)
        cpu = nn.Linear(8, 4)  # another thread's CPU build while a meta build runs: initialised as usual
    assert meta.weight.is_meta and meta.weight.shape == (4, 8)
    assert torch.equal(cpu.weight, expected)
    assert not hasattr(torch.nn.init.kaiming_uniform_, "_graphsurgeon_original")  # originals restored
    assert not hasattr(torch.nn.modules.linear.init.kaiming_uniform_, "_graphsurgeon_original")


def test_meta_build_keeps_tied_weights():
    import transformers

    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16)
    with torch.device("meta"), skip_meta_init():
        model = transformers.GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(1 for _ in model.parameters()) == sum(1 for _ in transformers.GPT2LMHeadModel(cfg).parameters())
