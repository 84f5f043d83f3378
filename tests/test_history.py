"""Commands and history: one undo per compound edit, undo-all restores the captured graph, random sequences."""

import random

import pytest
import torch

from shared_captures import captured
from graphsurgeon.surgery import (ChangeLoRA, History, InsertLoRA, LoRAConfig, RemoveLoRA, add_lora, find_targets,
                                  lora_weights)
from graphsurgeon.validate.diagnostics import ValidationError


def _out(cm):
    return next(iter(cm.run(**cm.example_inputs).values()))


def _bump(cm, seed):
    gen = torch.Generator().manual_seed(seed)
    for path in cm.loras:
        a, b = lora_weights(cm, path)
        with torch.no_grad():
            b.weight.copy_(torch.randn(b.weight.shape, generator=gen) * 0.1)


def test_every_layer_is_one_undo_and_undo_restores_code():
    cm = captured("tiny-gpt2")
    code0, out0 = cm.gm.code, _out(cm)
    history = History(cm)
    entry = add_lora(cm, ("q", "v"), "all", LoRAConfig(r=8, alpha=16), history=history)
    assert entry.text == "Add LoRA Layer (Q+V, r=8) to 2 layer(s)"
    assert entry.record.added == ["transformer.h.0.attn.lora_q", "transformer.h.0.attn.lora_v",
                                  "transformer.h.1.attn.lora_q", "transformer.h.1.attn.lora_v"]
    assert entry.command.commands[0].text == "Add LoRA Layer to transformer.h.0.attn q, r=8"
    _bump(cm, 0)
    edited = _out(cm)
    history.undo()
    assert not history.can_undo and history.can_redo and cm.loras == {}
    assert cm.gm.code == code0 and torch.equal(_out(cm), out0)
    assert not any("lora" in name for name, _ in cm.gm.named_parameters())
    history.redo()
    cm.gm.graph.lint()
    assert torch.equal(_out(cm), edited)  # redo brings back the same weights


def test_change_r_recreates_weights_and_reverts():
    cm = captured("tiny-bert")
    history = History(cm)
    add_lora(cm, ("q",), "0", history=history)
    path = "encoder.layer.0.attention.self.lora_q"
    _bump(cm, 1)
    edited = _out(cm)
    history.do(ChangeLoRA(cm, path, alpha=32.0))
    assert cm.loras[path].config.alpha == 32.0
    assert not torch.equal(_out(cm), edited)  # the same weights at twice the scaling
    history.do(ChangeLoRA(cm, path, r=2))
    assert lora_weights(cm, path)[0].weight.shape == (2, 64) and torch.all(lora_weights(cm, path)[1].weight == 0)
    history.undo()
    history.undo()
    assert cm.loras[path].config.r == 8 and torch.equal(_out(cm), edited)
    with pytest.raises(ValidationError, match="too large for .*: r must be between 1 and min"):
        history.do(ChangeLoRA(cm, path, r=65))
    assert cm.loras[path].config.r == 8 and len(history.done) == 1


def test_refused_compound_changes_nothing():
    cm = captured("tiny-gpt2")
    code0 = cm.gm.code
    t = find_targets(cm, ("q",))[1]
    History(cm).do(InsertLoRA(t, LoRAConfig(r=4)))
    code1 = cm.gm.code
    with pytest.raises(ValidationError, match="already adapts this tensor"):
        add_lora(cm, ("q",), "all")  # layer 0 would succeed, layer 1 is a duplicate: all or nothing
    assert cm.gm.code == code1 and list(cm.loras) == ["transformer.h.1.attn.lora_q"]
    assert code0 != code1


def _random_edit(cm, history, targets, rng, *, cuts, ranks, alphas, **change) -> None:
    """One random step: insert (below cuts[0]), remove (cuts[1]), change with `change` (cuts[2]), undo, or redo."""
    choice = rng.random()
    free = [t for t in targets if not any(b.target.target_node == t.target_node for b in cm.loras.values())]
    if choice < cuts[0] and free:
        history.do(InsertLoRA(rng.choice(free), LoRAConfig(r=rng.choice(ranks), alpha=rng.choice(alphas))))
    elif choice < cuts[1] and cm.loras:
        history.do(RemoveLoRA(cm, rng.choice(list(cm.loras))))
    elif choice < cuts[2] and cm.loras:
        history.do(ChangeLoRA(cm, rng.choice(list(cm.loras)), r=rng.choice([1, 3]), **change))
    elif choice < 0.8 and history.can_undo:
        history.undo()
    elif history.can_redo:
        history.redo()


def test_random_edit_sequences_match_the_delta_w_oracle():
    """Random edits on a model whose LoRA weights are re-randomized after every step: the outputs must equal
    the unmodified model with ΔW added on exactly the blocks that exist now (nothing stale, nothing lost)."""
    from surgery_models import delta_w_oracle, first_output, fresh, randomize

    cm = fresh("gpt2")
    code0 = cm.gm.code
    targets = find_targets(cm)
    rng = random.Random(7)
    history = History(cm)
    for step in range(30):
        _random_edit(cm, history, targets, rng, cuts=(0.35, 0.45, 0.6), ranks=[1, 2], alphas=[1, 4], alpha=2.0)
        cm.gm.graph.lint()
        randomize(cm, seed=step)
        torch.testing.assert_close(first_output(cm), delta_w_oracle("gpt2", cm), atol=2e-5, rtol=1e-4,
                                   msg=lambda m: f"step {step}: {m}")
    while history.can_undo:
        history.undo()
    assert cm.gm.code == code0


def test_random_edit_sequences_keep_lint_and_outputs():
    cm = captured("tiny-gpt2")
    code0, out0 = cm.gm.code, _out(cm)
    targets = find_targets(cm)
    rng = random.Random(1234)
    history = History(cm)
    for step in range(60):
        _random_edit(cm, history, targets, rng, cuts=(0.3, 0.4, 0.55), ranks=[1, 2, 4], alphas=[1, 8], dropout=0.1)
        cm.gm.graph.lint()
        # B = 0 everywhere (fresh init, and weights carried over on undo/redo), so outputs stay the original's
        assert torch.equal(_out(cm), out0), f"step {step}"
        names = {n.name for n in cm.gm.graph.nodes}
        assert all(b.add_node in names and set(b.nodes) <= names for b in cm.loras.values())
        assert sum(1 for n in cm.gm.graph.nodes if n.op == "call_module" and "lora" in n.target) == 2 * len(cm.loras)
    while history.can_undo:
        history.undo()
    assert cm.gm.code == code0


def test_redo_gives_byte_identical_code():
    """fx never frees an erased node's name; surgery does, so a redo rebuilds exactly the same code."""
    from shared_captures import captured
    from graphsurgeon.surgery import ChangeLoRA, History, InsertLoRA, LoRAConfig, find_targets

    cm = captured("tiny-gpt2")
    h = History(cm)
    targets = [t for t in find_targets(cm) if t.role in ("q", "v")]
    codes = []
    for t in targets:
        h.do(InsertLoRA(t, LoRAConfig(r=2)))
        codes.append(cm.gm.code)
    path = next(iter(cm.loras))
    h.do(ChangeLoRA(cm, path, r=3))
    codes.append(cm.gm.code)
    for _ in codes:
        h.undo()
    for code in codes:
        h.redo()
        assert cm.gm.code == code
