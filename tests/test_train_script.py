"""train.py in an exported folder: padding left out of the loss, heads saved and reloaded, the scaling flags,
and one-sentence errors (exit status 2, no traceback)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graphsurgeon.capture import capture
from graphsurgeon.export import SCRIPTS, export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build  # noqa: E402
from test_export import inputs, load_exported, max_diff, own_copy, run_train, run_trains  # noqa: E402

FIRST_LAST = r"first \d+ steps ([\d.]+) -> last \d+ steps ([\d.]+)"


def exported(model, folder: Path) -> Path:
    cm = capture(model)
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
    export_folder(cm, folder)
    return folder


@pytest.fixture(scope="module")
def gpt2(qv_export, tmp_path_factory) -> Path:
    """This module's copy of the session's gpt2 export (`exported`'s LoRA: r=4 on q and v); its tests write runs in it."""
    return own_copy(qv_export("gpt2")[1], tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="module")
def bert(qv_export, tmp_path_factory) -> Path:
    return own_copy(qv_export("bert")[1], tmp_path_factory.mktemp("bert"))


def import_train(folder: Path):
    """train.py of `folder` as a module (its model.py, not another folder's)."""
    for name in ("model", *(script.removesuffix(".py") for script in SCRIPTS)):
        sys.modules.pop(name, None)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("train")
    finally:
        sys.path.remove(str(folder))


def refused(folder: Path, *args: str, capsys) -> str:
    """Run train.py's main in this process and return its one-line error (it must exit with status 2); what the test
    printed before is not part of it."""
    capsys.readouterr()
    train = import_train(folder)
    with pytest.raises(SystemExit) as stop:
        train.main(list(args))
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def losses(stdout: str) -> tuple[float, float]:
    return tuple(map(float, re.search(FIRST_LAST, stdout).groups()))


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_padded_batch_loss_equals_the_unpadded_rows(arch, gpt2, bert):
    """Rows of 7 and 3 tokens in one padded batch give the loss of the two rows run alone."""
    train = import_train(gpt2 if arch == "gpt2" else bert)
    model = train.exported.load_model(str(gpt2 if arch == "gpt2" else bert)).eval()
    head = None if arch == "gpt2" else train.ClassificationHead(64, 2)
    task = train.Task(model, head)
    rows = [([5, 6, 7, 8, 9, 10, 11], 1), ([12, 13, 14], 0)]
    kind = train.loss_type()
    special = {"pad": 0, "never": set(), "vocab": 101, "mask": None}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ids, attention, labels = train.batch(rows, [0, 1], kind, special, gen)
        assert attention.tolist()[1] == [1, 1, 1, 0, 0, 0, 0]
        padded = task(ids, attention, labels).item()
        alone = [task(*train.batch(rows, [i], kind, special, gen)).item() for i in (0, 1)]
    if kind == "ForCausalLM":  # a mean over the predicted tokens: 6 of row 0, 2 of row 1
        want = (alone[0] * 6 + alone[1] * 2) / 8
    else:  # a mean over the rows
        want = sum(alone) / 2
    assert abs(padded - want) <= 1e-5
    with torch.no_grad():  # the padding would change the loss if it were not left out (as target / in attention)
        unmasked = task(ids, attention, ids) if kind == "ForCausalLM" else task(ids, torch.ones_like(attention), labels)
    assert abs(unmasked.item() - want) > 1e-4


def test_head_saved_and_resumed(bert, capsys):
    data = bert.parent / "train.jsonl"
    data.write_text("\n".join(json.dumps({"input_ids": [i % 7 + 1] * (3 + i % 4), "label": i % 2}) for i in range(8)))
    first = run_train(bert, "--data", str(data), "--steps", "20", "--seq-len", "8", "--lr", "1e-2", "--run-name", "head")
    assert first.returncode == 0, first.stderr
    assert losses(first.stdout)[1] < losses(first.stdout)[0]
    run = bert / "runs" / "head"
    saved = load_file(str(run / "classifier_head.safetensors"))
    assert set(saved) == {"classifier.weight", "classifier.bias"} and saved["classifier.weight"].shape == (2, 64)
    assert torch.equal(load_file(str(run / "trainable.safetensors"))["head.classifier.weight"], saved["classifier.weight"])
    again = run_train(bert, "--resume", str(run), "--steps", "40")
    assert again.returncode == 0 and "resumed" in again.stdout and "step 40/40" in again.stdout, again.stderr
    assert not torch.equal(load_file(str(run / "classifier_head.safetensors"))["classifier.weight"], saved["classifier.weight"])
    assert "--num-labels 2" in refused(bert, "--resume", str(run), "--steps", "41", "--num-labels", "3", capsys=capsys)


def test_sequence_classifier_trains_and_saves_its_own_head(tmp_path):
    folder = exported(build("bert", "ForSequenceClassification", num_labels=3), tmp_path / "out")
    before = load_file(str(folder / "model.safetensors"))["classifier.weight"]
    result = run_train(folder, "--synthetic", "--steps", "20", "--merge", "--run-name", "r")
    assert result.returncode == 0, result.stderr
    assert "trainable params: 2,243 ||" in result.stdout  # LoRA 2,048 + classifier 64*3+3
    trained = load_file(str(folder / "runs" / "r" / "trainable.safetensors"))
    assert max_diff(before, trained["classifier.weight"]) > 0
    assert torch.equal(load_file(str(folder / "model.safetensors"))["classifier.weight"], before)
    merged = type(build("bert", "ForSequenceClassification", num_labels=3)).from_pretrained(
        str(folder / "runs" / "r" / "merged")).eval()
    x = inputs("bert")
    model = load_exported(folder)
    model.load_state_dict(trained, strict=False)
    with torch.no_grad():
        assert max_diff(model(**x)["logits"], merged(**x).logits) <= 1e-5


def test_masked_lm_uses_the_mask_token_never_padding(tmp_path, capsys):
    folder = exported(build("bert", "ForMaskedLM"), tmp_path / "out")
    assert "--mask-token-id" in refused(folder, "--synthetic", "--steps", "2", capsys=capsys)
    assert "padding" in refused(folder, "--synthetic", "--steps", "2", "--mask-token-id", "0", capsys=capsys)  # [PAD]
    import_train(folder)  # its train_data module with it
    ids = torch.randint(5, 100, (4, 12), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[:, 8:] = 0
    ids[:, 8:] = 0
    ids[:, 0] = 2  # a special token (e.g. [CLS])
    inputs_, labels = sys.modules["train_data"].mask_tokens(ids, attention, 99, {0, 2}, 101, torch.Generator().manual_seed(0), rate=0.5)
    chosen = labels != -100
    assert chosen.any() and not chosen[:, 8:].any() and not chosen[:, 0].any()  # never padding or specials
    assert torch.equal(labels[chosen], ids[chosen]) and (inputs_[chosen] == 99).float().mean() > 0.5
    assert torch.equal(inputs_[~chosen], ids[~chosen])
    result = run_train(folder, "--synthetic", "--steps", "20", "--mask-token-id", "99")
    assert result.returncode == 0, result.stderr


def test_scaling_flags_run_on_cpu(gpt2):
    scaled, compiled = run_trains(gpt2, ("--synthetic", "--steps", "3", "--bf16", "--grad-checkpoint", "--device", "cpu",
                                         "--run-name", "bf16"), ("--synthetic", "--steps", "2", "--compile",
                                                                 "--run-name", "compile"))
    assert scaled.returncode == 0, scaled.stderr
    assert "gradient checkpointing: 2 blocks" in scaled.stdout
    assert compiled.returncode == 0, compiled.stderr
    assert "step 2/2" in compiled.stdout


def test_model_py_compiles_to_one_graph(gpt2):
    """torch.compile (train.py --compile) sees the training forward as one graph: the mask builder's "nothing is
    padded" test is data-dependent, so under compile it is skipped and the mask built, as HF does (it broke the graph
    in four)."""
    model = load_exported(gpt2).train()
    x = inputs("gpt2")
    explained = torch._dynamo.explain(model)(**x, labels=x["input_ids"])
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]


def test_fsdp_under_torchrun_saves_the_trained_lora(gpt2, capsys):
    from peft import PeftModel

    result = run_train(gpt2, "--synthetic", "--steps", "4", "--fsdp", "--merge", "--lr", "1e-2", "--run-name", "fsdp",
                       torchrun=True)
    assert result.returncode == 0, result.stderr
    assert "FSDP2: 2 blocks and the rest of the model sharded over 2 processes" in result.stdout
    x = inputs("gpt2")
    run = gpt2 / "runs" / "fsdp"
    with torch.no_grad():
        model = load_exported(gpt2)
        model.load_state_dict(load_file(str(run / "trainable.safetensors")), strict=False)
        ours = model(**x)["logits"]
        peft = PeftModel.from_pretrained(build("gpt2"), str(run)).eval()(**x).logits
        merged = type(build("gpt2")).from_pretrained(str(run / "merged")).eval()(**x).logits
    assert max_diff(ours, build("gpt2")(**x).logits) > 1e-4  # trained: B moved off zero
    assert max_diff(ours, peft) <= 1e-5 and max_diff(ours, merged) <= 1e-5
    assert "torchrun" in refused(gpt2, "--synthetic", "--steps", "1", "--fsdp", capsys=capsys)
    resumed = run_train(gpt2, "--resume", str(run), "--steps", "5")  # one process: FSDP's run resumes without it
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr


def test_bad_input_is_one_sentence(gpt2, tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café au lait ".encode("latin-1") * 20)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b'{"input_ids": [1, 2]}\n\xff\xfe\n')
    cases = {
        ("--data", str(tmp_path)): "is a folder",
        ("--data", str(latin)): "not UTF-8",
        ("--data", str(jsonl)): "not UTF-8",
        ("--synthetic", "--seq-len", "65"): "longer than the model's 64 positions",
        ("--synthetic", "--batch-size", "0"): "--batch-size must be at least 1",
    }
    if not torch.cuda.is_available():
        cases[("--synthetic", "--device", "cuda")] = "no CUDA"
    for args, why in cases.items():
        assert why in refused(gpt2, *args, "--steps", "1", capsys=capsys), args
    broken = tmp_path / "broken"
    shutil.copytree(gpt2, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = run_train(broken, "--synthetic", "--steps", "1")  # as a user runs it: exit 2, one line, no traceback
    assert result.returncode == 2 and "truncated or corrupt" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
