"""The exported model.py keeps Hugging Face's forward conventions, against the HF model on every architecture:
optional inputs, padded masks, token_type_ids, position_ids, labels -> loss, and dropout in training mode.

Written against the folder only (export_folder + model.py's load_model), so it holds for any code generator.
Each model is exported once per module.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import ARCHS, build  # noqa: E402
from test_export import load_exported, max_diff  # noqa: E402

# a distinct p per kind of place (embeddings / residual / attention), so a dropout in the wrong place shows
DROPOUTS = {
    "bert": dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.2),
    "roberta": dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.2),
    "distilbert": dict(dropout=0.1, attention_dropout=0.2),
    "gpt2": dict(embd_pdrop=0.05, resid_pdrop=0.1, attn_pdrop=0.2),
    "bigcode": dict(embd_pdrop=0.05, resid_pdrop=0.1, attn_pdrop=0.2),
    "opt": dict(dropout=0.1, attention_dropout=0.2),
    "llama": dict(attention_dropout=0.2),
}
VOCAB = 101
CAPTURES = {}  # arch -> the CapturedModel the folder was exported from (the editor's graph)
FOLDERS = {}  # arch -> the export folder


def export(model, folder: Path):
    """(capture, model.py's model in eval mode) of `model` exported to `folder`."""
    cm = capture(model)
    export_folder(cm, folder)
    return cm, load_exported(folder)


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, tmp_path_factory):
    """(arch, HF model, exported model.py model), one export per architecture."""
    arch = request.param
    hf = build(arch, **DROPOUTS[arch])
    FOLDERS[arch] = tmp_path_factory.mktemp(arch) / "out"
    cm, ours = export(build(arch, **DROPOUTS[arch]), FOLDERS[arch])
    CAPTURES[arch] = cm
    return arch, hf, ours


def ids(batch: int = 3, seq: int = 7, seed: int = 5) -> torch.Tensor:
    return torch.randint(2, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def padded_mask(batch: int = 3, seq: int = 7) -> torch.Tensor:
    """Row 0 padded on the left, row 1 on the right, row 2 not at all."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, seq - 2:] = 0
    return mask


def outputs(out) -> dict[str, torch.Tensor]:
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def test_input_ids_alone(pair):
    arch, hf, ours = pair
    x = ids()
    with torch.no_grad():
        got, want = ours(input_ids=x), outputs(hf(input_ids=x))
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == want[name].shape and max_diff(got[name], want[name]) <= 1e-5, name


def test_padded_attention_mask_left_and_right(pair):
    arch, hf, ours = pair
    x, mask = ids(), padded_mask()
    with torch.no_grad():
        got, want = ours(input_ids=x, attention_mask=mask), outputs(hf(input_ids=x, attention_mask=mask))
        unpadded = ours(input_ids=x)
    first = next(iter(want))
    keep = mask.bool()
    assert max_diff(got[first][keep], want[first][keep]) <= 1e-5
    assert max_diff(got[first][keep], unpadded[first][keep]) > 1e-4  # the mask really reaches attention
    graph = CAPTURES[arch].run(input_ids=x, attention_mask=mask)  # the editor's captured graph as well
    assert max_diff(graph[first][keep], want[first][keep]) <= 1e-5
    if "pooler_output" in want:  # the first token's state: rows whose first token is not padding
        assert max_diff(got["pooler_output"][1:], want["pooler_output"][1:]) <= 1e-5


def test_position_ids_given(pair):
    arch, hf, ours = pair
    x = ids()
    if arch == "roberta":  # RoBERTa's positions start after padding_idx (1)
        positions = torch.randint(2, 60, x.shape, generator=torch.Generator().manual_seed(3))
    else:
        positions = torch.randint(0, 60, x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = ours(input_ids=x, position_ids=positions), outputs(hf(input_ids=x, position_ids=positions))
    first = next(iter(want))
    assert max_diff(got[first], want[first]) <= 1e-5
    assert max_diff(got[first], ours(input_ids=x)[first]) > 1e-4  # the positions are really used


@pytest.mark.parametrize("pair", ["bert", "roberta"], indirect=True)
def test_token_type_ids(pair):
    arch, hf, ours = pair
    type_vocab = 2 if arch == "bert" else 1
    x = ids()
    types = torch.randint(0, type_vocab, x.shape, generator=torch.Generator().manual_seed(4))
    types[:, :2] = type_vocab - 1  # non-zero wherever the model has a second segment
    with torch.no_grad():
        got = ours(input_ids=x, token_type_ids=types, attention_mask=padded_mask())
        want = hf(input_ids=x, token_type_ids=types, attention_mask=padded_mask())
    keep = padded_mask().bool()
    assert max_diff(got["last_hidden_state"][keep], want.last_hidden_state[keep]) <= 1e-5
    if type_vocab > 1:
        assert max_diff(got["last_hidden_state"], ours(input_ids=x)["last_hidden_state"]) > 1e-4


def labels_with_ignored(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[0, :3] = -100  # e.g. the left padding
    y[1, 4] = -100
    return y


@pytest.mark.parametrize("pair", ["gpt2", "bigcode", "opt", "llama"], indirect=True)  # the encoders' heads: below
def test_causal_lm_loss(pair):
    arch, hf, ours = pair
    x, mask = ids(), padded_mask()
    y = labels_with_ignored(x)
    with torch.no_grad():
        for kwargs in ({}, {"attention_mask": mask}):
            got, want = ours(input_ids=x, labels=y, **kwargs), hf(input_ids=x, labels=y, **kwargs)
            assert list(got)[0] == "loss" and got["loss"].dim() == 0
            assert abs(got["loss"].item() - want.loss.item()) <= 1e-5
            assert max_diff(got["logits"], want.logits) <= 1e-5
    with torch.no_grad():
        assert "loss" not in ours(input_ids=x)


def test_outputs_read_as_hugging_faces_are(pair):
    """out.logits, out[0], out.loss (first with labels), return_dict=False → the tuple: as HF's ModelOutput reads."""
    arch, hf, ours = pair
    x = ids()
    with torch.no_grad():
        out, want, as_tuple = ours(input_ids=x), hf(input_ids=x), ours(input_ids=x, return_dict=False)
        assert list(out) == [k for k in want.keys() if k in out] and isinstance(out, dict)
        for i, name in enumerate(out):
            assert getattr(out, name) is out[name] and out[i] is out[name]
            assert max_diff(as_tuple[i], want[i]) <= 1e-5 and max_diff(getattr(out, name), getattr(want, name)) <= 1e-5
        assert type(as_tuple) is tuple and len(as_tuple) == len(out) and out[:1][0] is out[0]
        assert type(ours(input_ids=x, return_dict=True)) is type(out)
        with pytest.raises(AttributeError, match="returned no 'hidden_stat'"):
            out.hidden_stat
        if "labels" in inspect.signature(ours.forward).parameters and arch in ("gpt2", "bigcode", "opt", "llama"):
            got, ref = ours(input_ids=x, labels=x), hf(input_ids=x, labels=x)
            assert got.loss is got[0] and abs(got.loss.item() - ref[0].item()) <= 1e-5
            assert ours(input_ids=x, labels=x, return_dict=False)[0].item() == got.loss.item()


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """Tiny task-head models, each exported once: {name: (HF model, exported model)}."""
    specs = {
        "bert-mlm": ("bert", "ForMaskedLM", {}),
        "distilbert-mlm": ("distilbert", "ForMaskedLM", {}),
        "bert-single": ("bert", "ForSequenceClassification", dict(num_labels=3)),
        "bert-regression": ("bert", "ForSequenceClassification", dict(num_labels=1)),
        "bert-multi": ("bert", "ForSequenceClassification", dict(num_labels=3, problem_type="multi_label_classification")),
        "gpt2-single": ("gpt2", "ForSequenceClassification", dict(num_labels=3, pad_token_id=0)),
    }
    out = {}
    for name, (arch, head, overrides) in specs.items():
        _, ours = export(build(arch, head, **overrides), tmp_path_factory.mktemp(name) / "out")
        out[name] = build(arch, head, **overrides), ours
    return out


def test_masked_lm_loss(heads):
    x = ids()
    y = torch.full_like(x, -100)
    y[:, 2] = x[:, 2]
    y[0, 5] = x[0, 5]
    for name in ("bert-mlm", "distilbert-mlm"):
        hf, ours = heads[name]
        with torch.no_grad():
            got, want = ours(input_ids=x, labels=y, attention_mask=padded_mask()), hf(
                input_ids=x, labels=y, attention_mask=padded_mask())
        assert abs(got["loss"].item() - want.loss.item()) <= 1e-5, name
        assert max_diff(got["logits"], want.logits) <= 1e-5, name


@pytest.mark.parametrize("name,labels", [
    ("bert-single", torch.tensor([0, 2, 1])),
    ("bert-regression", torch.tensor([0.5, -1.0, 2.0])),
    ("bert-multi", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
    ("gpt2-single", torch.tensor([2, 0, 1])),
])
def test_sequence_classification_loss(heads, name, labels):
    hf, ours = heads[name]
    x = ids()
    x[1, 5:] = 0  # GPT-2 pools the last token that is not padding (pad_token_id 0)
    with torch.no_grad():
        got, want = ours(input_ids=x, labels=labels), hf(input_ids=x, labels=labels)
    assert max_diff(got["logits"], want.logits) <= 1e-5
    assert abs(got["loss"].item() - want.loss.item()) <= 1e-5


class DropoutPlaces(TorchDispatchMode):
    """Every dropout a forward applies, as (shape of the tensor dropped, p): on CPU each is one bernoulli_."""

    def __init__(self) -> None:
        super().__init__()
        self.places: list[tuple[tuple[int, ...], float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.bernoulli_.float:
            self.places.append((tuple(args[0].shape), round(1.0 - args[1], 6)))
        return func(*args, **(kwargs or {}))


def test_train_mode_dropout_places_and_p(pair):
    arch, hf, ours = pair
    x = ids()
    ours.train(), hf.train()
    try:
        with DropoutPlaces() as got:
            ours(input_ids=x)
        with DropoutPlaces() as want:
            hf(input_ids=x)
    finally:
        ours.eval(), hf.eval()
    assert want.places and got.places == want.places
    assert {p for _, p in want.places} >= {DROPOUTS[arch].get("attention_dropout", DROPOUTS[arch].get(
        "attn_pdrop", DROPOUTS[arch].get("attention_probs_dropout_prob")))}  # attention dropout included
    with DropoutPlaces() as in_eval:
        ours(input_ids=x)
    assert in_eval.places == []


@pytest.mark.parametrize("pair", ["gpt2"], indirect=True)
def test_load_model_refuses_missing_key_and_truncated_file(pair, tmp_path):
    """The module's GPT-2 export (read only: the tests break a copy of it)."""
    out = FOLDERS[pair[0]]
    weights = out / "model.safetensors"
    spec = importlib.util.spec_from_file_location("exported_refusals", out / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    broken = tmp_path / "missing"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("__pycache__"))
    tensors = load_file(str(weights))
    del tensors["transformer.h.1.mlp.c_fc.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(module.WeightsError, match=r"has no tensor 'transformer.h.1.mlp.c_fc.weight'") as err:
        module.load_model(str(broken))
    assert "\n" not in str(err.value)

    data = weights.read_bytes()
    for cut in (4, 100, len(data) - 10):
        (broken / "model.safetensors").write_bytes(data[:cut])
        with pytest.raises(module.WeightsError, match="truncated or corrupt") as err:
            module.load_model(str(broken))
        assert "\n" not in str(err.value) and err.value.__suppress_context__  # no chained reader traceback


def test_a_loss_hf_does_not_compute_is_not_written():
    """XLNetLMHeadModel is named for no loss and computes its own (cross-entropy without the causal shift): it gets
    no HF loss, not the causal-LM fallback, which would shift; classes named for a loss or calling
    `self.loss_function` keep theirs."""
    import transformers as tf

    from graphsurgeon.capture.hf_conventions import hf_loss_spec

    xlnet = tf.XLNetLMHeadModel(tf.XLNetConfig(d_model=32, n_layer=1, n_head=2, d_inner=64, vocab_size=50))
    assert hf_loss_spec(xlnet, True, ["logits", "mems_0"]) is None
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, bos_token_id=0,
                                            eos_token_id=0))
    assert hf_loss_spec(gpt2, True, ["logits"])["loss_type"] == "ForCausalLM"  # calls self.loss_function
    bert = tf.BertForMaskedLM(tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, vocab_size=50))
    assert hf_loss_spec(bert, True, ["logits"])["loss_type"] == "ForMaskedLM"  # its own loss, named by its class
    marian = tf.MarianMTModel(tf.MarianConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                              vocab_size=50, decoder_vocab_size=50, pad_token_id=0,
                                              decoder_start_token_id=0))
    assert hf_loss_spec(marian, True, ["logits"]) is not None  # an encoder-decoder's own loss: unshifted, as SEQ2SEQ
    labels = torch.randint(0, 50, (1, 6))
    with torch.no_grad():  # why: HF's XLNet loss is the unshifted cross-entropy
        out = xlnet.eval()(input_ids=labels, labels=labels)
        assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits.view(-1, 50), labels.view(-1)))
