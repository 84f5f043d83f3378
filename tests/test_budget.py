"""Parameter budget equals PEFT's print_trainable_parameters; the BERT-base numbers from the issue."""

import pytest

from graphsurgeon.surgery import LoRAConfig, add_lora
from graphsurgeon.surgery.budget import budget
from surgery_models import build, fresh


def test_tiny_bert_matches_peft():
    peft = pytest.importorskip("peft")
    cm = fresh("bert")
    add_lora(cm, ("q", "v"), config=LoRAConfig(r=4))
    model = peft.get_peft_model(build("bert"), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    trainable, total = model.get_nb_trainable_parameters()
    b = budget(cm)
    assert (b.trainable, b.total) == (trainable, total)
    assert b.lora_bytes == b.grad_bytes == 4 * trainable and b.adam_bytes == 8 * trainable
    assert b.frozen_bytes >= 4 * (total - trainable)


def test_bert_base_q_v_r8_numbers_from_the_issue():
    from graphsurgeon.capture import capture

    cm = capture("bert-base-uncased", meta=True)
    add_lora(cm, ("q", "v"), "all", LoRAConfig(r=8, alpha=16))
    b = budget(cm)
    assert (b.trainable, b.total) == (294_912, 109_777_152)
    assert f"{b.percent:.4f}" == "0.2686"
    assert b.text == "trainable params: 294,912 || all params: 109,777,152 || trainable%: 0.2686"
