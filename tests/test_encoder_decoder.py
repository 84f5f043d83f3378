"""Encoder-decoders called the Hugging Face way: model.py derives decoder_input_ids as HF does (labels shifted right;
BART also shifts input_ids when no labels), and its loss is HF's. Oracle: the unmodified HF model."""

import importlib.util

import pytest
import torch
from model_zoo import build

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder


def _load(folder):
    spec = importlib.util.spec_from_file_location(f"encdec_{folder.name}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(folder)).eval(), (folder / "model.py").read_text()


@pytest.fixture(scope="module", params=["t5", "bart"])
def exported(request, tmp_path_factory):
    model = build(request.param, attn="sdpa")
    if request.param == "t5":
        model.config.decoder_start_token_id = 0  # as t5-small's config.json has it (the tiny default has none)
    cm = capture(model)
    folder = tmp_path_factory.mktemp(request.param) / "out"
    export_folder(cm, folder)
    return request.param, model, cm, *_load(folder)


def test_decoder_inputs_are_derived_as_hf_derives_them(exported):
    kind, hf, cm, ours, source = exported
    assert cm.decoder_default["sources"] == (["labels"] if kind == "t5" else ["labels", "input_ids"])
    assert "decoder_input_ids=None" in source and "labels=None" in source
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 100, (2, 9), generator=gen)
    labels = torch.randint(3, 100, (2, 6), generator=gen)
    labels[0, 4:] = -100  # ignored by the loss, read as pad by the shift
    with torch.no_grad():
        want, got = hf(input_ids=ids, labels=labels), ours(ids, labels=labels)
        assert (got["logits"] - want.logits).abs().max().item() <= 1e-5
        assert abs(got["loss"].item() - want.loss.item()) <= 1e-5
        mask = torch.ones_like(ids)
        mask[1, 6:] = 0
        want, got = hf(input_ids=ids, attention_mask=mask, labels=labels), ours(ids, attention_mask=mask, labels=labels)
        assert (got["logits"] - want.logits).abs().max().item() <= 1e-5
        if kind == "bart":  # BART (not T5) shifts input_ids when there are no labels either
            assert (ours(ids)["logits"] - hf(input_ids=ids).logits).abs().max().item() <= 1e-5
    if kind == "t5":
        with pytest.raises(ValueError, match="needs decoder_input_ids or labels"):
            ours(ids)


def test_loss_is_the_seq2seq_loss(exported):
    _, _, cm, _, _ = exported
    assert cm.hf_loss["loss_type"] == "ForConditionalGeneration"  # no label shift: PEFT task SEQ_2_SEQ_LM
