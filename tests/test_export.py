"""Export folder: standalone model.py, safetensors, PEFT adapter, train.py (alone, torchrun, merge), bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphsurgeon.export import ExportError, export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora, lora_weights

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, fresh, randomize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"
ARCHS = ["gpt2", "bert", "bigcode"]  # Conv1D fused QKV, separate Linears, uneven multi-query fused Linear


def load_exported(folder: Path):
    """Import folder/model.py under a unique name and build the model: in eval mode, as from_pretrained returns it."""
    spec = importlib.util.spec_from_file_location(f"exported_{abs(hash(str(folder)))}", folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.load_model(str(folder))
    assert not model.training, "load_model must return the model in eval mode (dropout off), as from_pretrained does"
    return model


def inputs(arch: str, batch: int = 3, seq: int = 7) -> dict[str, torch.Tensor]:
    """Inputs at a batch/seq other than the capture's (2, 10); BERT gets padding in its mask."""
    gen = torch.Generator().manual_seed(5)
    x = {"input_ids": torch.randint(0, 101, (batch, seq), generator=gen)}
    if arch == "bert":
        x["attention_mask"] = torch.ones(batch, seq, dtype=torch.long)
        x["attention_mask"][0, seq - 2:] = 0
    return x


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: the folder must run without graphsurgeon on the path."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def start_train(folder: Path, *args: str, torchrun: bool = False) -> subprocess.Popen:
    """train.py of `folder` started as a user starts it (its own process, graphsurgeon not on the path)."""
    cmd = ([str(TORCHRUN), "--nproc_per_node", "2"] if torchrun else [sys.executable]) + ["train.py", *args]
    return subprocess.Popen(cmd, cwd=folder, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    """What a started train.py printed and its exit status, once it ends (killed after 300 s)."""
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_train(folder: Path, *args: str, torchrun: bool = False) -> subprocess.CompletedProcess:
    return finish(start_train(folder, *args, torchrun=torchrun))


def run_trains(folder: Path, *runs: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Independent train.py runs of `folder` at once (each with its own --run-name): their start-ups overlap."""
    return [finish(proc) for proc in [start_train(folder, *args) for args in runs]]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def gpt2_qv(qv_export):
    return qv_export("gpt2")


def own_copy(folder: Path, where: Path) -> Path:
    return Path(shutil.copytree(folder, where / "out", ignore=shutil.ignore_patterns("__pycache__")))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("with_lora", [False, True], ids=["no-lora", "b-zero"])
def test_model_py_matches_original(arch, with_lora, qv_export, plain_export):
    # the session's exports, shared with the tests below (B-zero: PEFT's init, B = 0, so nothing may move)
    cm, out = qv_export(arch) if with_lora else plain_export(arch)
    model, original = load_exported(out), build(arch)
    x = inputs(arch)
    with torch.no_grad():
        got, want = model(**x), original(**x)
    for name in cm.output_names:
        assert got[name].shape == want[name].shape
        assert max_diff(got[name], want[name]) <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_matches_editor_peft_and_merged(arch, tmp_path):
    from peft import PeftModel

    cm = fresh(arch)
    if arch == "bigcode":  # different r/alpha on q and v of one fused module: scalings must fold into B
        add_lora(cm, roles=("q",), config=LoRAConfig(r=4, alpha=8))
        add_lora(cm, roles=("v",), config=LoRAConfig(r=2, alpha=6))
        assert {lora_weights(cm, p)[0].weight.shape[0] for p in cm.loras} == {2, 4}
    else:
        add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
    randomize(cm)
    out = tmp_path / "out"
    export_folder(cm, out)
    x = inputs(arch)
    key = cm.output_names[0]
    with torch.no_grad():
        ours = load_exported(out)(**x)[key]
        editor = cm.run(**x)[key]
        peft = PeftModel.from_pretrained(build(arch), str(out)).eval()(**x)
        peft = peft[0] if isinstance(peft, tuple) else getattr(peft, key)
    assert max_diff(ours, editor) <= 1e-5
    assert max_diff(ours, peft) <= 1e-5
    assert max_diff(ours, build(arch)(**x)[key]) > 1e-3  # the LoRA really changes the output

    result = run_train(out, "--merge-only")
    assert result.returncode == 0, result.stderr
    merged = type(build(arch)).from_pretrained(str(out / "runs" / "export" / "merged")).eval()
    with torch.no_grad():
        assert max_diff(ours, merged(**x)[key]) <= 1e-5


def test_slice_names_and_adapter_layout(gpt2_qv):
    from safetensors.torch import load_file

    _, out = gpt2_qv
    names = load_file(str(out / "model.safetensors"))
    assert names["transformer.h.0.attn.c_attn.q.lora_A.weight"].shape == (4, 64)
    assert names["transformer.h.1.attn.c_attn.v.lora_B.weight"].shape == (64, 4)
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names  # tied: saved once
    adapter = load_file(str(out / "adapter_model.safetensors"))
    b = adapter["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]
    assert b.shape == (192, 8) and b[64:128].abs().sum() == 0  # K rows are zero
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True
    model_py = (out / "model.py").read_text()
    imports = set(re.findall(r"^(?:import|from) (\w+)", model_py, re.M))
    assert imports <= {"torch", "safetensors", "os", "json", "dataclasses"}
    assert "class LoRA(nn.Module)" in model_py and "# [batch, seq, 64]" in model_py
    # every layer has it: built in __init__, sized by the config as the base layers are
    assert "self.c_attn.q = LoRA(config.n_embd, config.n_embd, r=4, scaling=2.0)" in model_py
    assert model_py.count("class GPT2Block(") == 1 and "class GPT2Block2" not in model_py  # h.0, h.1 written once
    assert "for layer in self.h:" in model_py


def test_train_synthetic_lowers_loss_and_torchrun(gpt2_qv, tmp_path):
    out = own_copy(gpt2_qv[1], tmp_path)
    before = (out / "adapter_model.safetensors").read_bytes()
    result = run_train(out, "--synthetic", "--steps", "30", "--lr", "1e-2", "--run-name", "one")
    assert result.returncode == 0, result.stderr
    assert "trainable params: 2,048 || all params:" in result.stdout
    first, last = map(float, re.search(r"first \d+ steps ([\d.]+) -> last \d+ steps ([\d.]+)", result.stdout).groups())
    assert last < first
    assert (out / "runs" / "one" / "adapter_model.safetensors").read_bytes() != before
    assert (out / "adapter_model.safetensors").read_bytes() == before  # the export is never written to

    result = run_train(out, "--synthetic", "--steps", "4", "--merge", "--run-name", "two", torchrun=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("trainable params") == 1  # only rank 0 prints and writes
    run = out / "runs" / "two"
    assert (run / "adapter_model.safetensors").exists() and (run / "adapter_config.json").exists()
    from peft import PeftModel
    from safetensors.torch import load_file

    x = inputs("gpt2")
    with torch.no_grad():
        peft = PeftModel.from_pretrained(build("gpt2"), str(run)).eval()(**x).logits
        model = load_exported(out)
        model.load_state_dict(load_file(str(run / "trainable.safetensors")), strict=False)
        ours = model(**x)["logits"]
        merged = type(build("gpt2")).from_pretrained(str(run / "merged")).eval()(**x).logits
    assert max_diff(ours, peft) <= 1e-5 and max_diff(ours, merged) <= 1e-5


def test_bert_classifier_head_trains(qv_export, tmp_path):
    out = own_copy(qv_export("bert")[1], tmp_path)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"input_ids": [i % 7 + 1] * 5, "label": i % 2}) for i in range(8)))
    result = run_train(out, "--data", str(data), "--steps", "30", "--seq-len", "8", "--lr", "1e-2")
    assert result.returncode == 0, result.stderr
    first, last = map(float, re.search(r"first \d+ steps ([\d.]+) -> last \d+ steps ([\d.]+)", result.stdout).groups())
    assert last < first


def test_bad_input(tmp_path, capsys):
    cm = fresh("gpt2")
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=2, alpha=4))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_folder(cm, out)
    with pytest.raises(ExportError, match="--force only replaces an earlier graphsurgeon export .* holds keep.txt"):
        export_folder(cm, out, force=True)
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    export_folder(cm, out)
    (out / "merged").mkdir()  # what the earlier export's train.py wrote
    (out / "stale.txt").write_text("the user's")
    with pytest.raises(ExportError, match=r"also holds files graphsurgeon did not write \(stale.txt\)"):
        export_folder(cm, out, force=True)  # the user's files are never deleted
    (out / "stale.txt").unlink()
    export_folder(cm, out, force=True)  # an earlier export is replaced whole
    assert not (out / "merged").exists() and (out / "model.py").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind

    from test_train_script import refused  # main() in-process: exit 2, one line

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5\n')
    assert "line 2" in refused(out, "--data", str(bad), "--steps", "1", capsys=capsys)
    assert "does not exist" in refused(out, "--data", str(tmp_path / "missing.jsonl"), "--steps", "1", capsys=capsys)
    text = tmp_path / "notes.txt"
    text.write_text("hello world")
    assert "no tokenizer" in refused(out, "--data", str(text), "--steps", "1", capsys=capsys)


def test_refuses_invalid_graph(tmp_path):
    cm = fresh("gpt2")
    add_lora(cm, roles=("q",), layers="all", config=LoRAConfig(r=2, alpha=4))
    block = next(iter(cm.loras.values()))
    cm.gm.get_submodule(block.module_path).lora_B = torch.nn.Linear(2, 7, bias=False)  # wrong width
    cm.touch()
    with pytest.raises(ExportError, match="fails validation"):
        export_folder(cm, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["opt", "llama", "roberta", "distilbert"])
def test_more_architectures_match_editor(arch, tmp_path):
    cm = fresh(arch)
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
    randomize(cm)
    export_folder(cm, tmp_path / "out")
    x = {k: v for k, v in inputs("bert").items() if k in cm.input_names}
    with torch.no_grad():
        got, want = load_exported(tmp_path / "out")(**x), cm.run(**x)
    for name in cm.output_names:
        assert max_diff(got[name], want[name]) <= 1e-5


def test_meta_capture_is_materialized(tmp_path):
    from graphsurgeon.capture import capture

    cm = capture("tiny-gpt2", meta=True)
    with pytest.raises(ExportError, match="would hold weights that were never trained; pass --random-weights"):
        export_folder(cm, tmp_path / "out")
    assert cm.is_meta and not (tmp_path / "out").exists()  # refused before any weight memory or file
    export_folder(cm, tmp_path / "out", random_weights=True)
    assert "**Weights: random.**" in (tmp_path / "out" / "README.md").read_text()
    assert json.loads((tmp_path / "out" / "surgery.json").read_text())["weights"]["kind"] == "random"
    x = inputs("gpt2")
    with torch.no_grad():
        got = load_exported(tmp_path / "out")(**x)["logits"]
    assert not cm.is_meta and max_diff(got, cm.run(**x)["logits"]) <= 1e-5


def test_text_and_jsonl_data(gpt2_qv, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    out = own_copy(gpt2_qv[1], tmp_path)
    words = ["the", "cat", "sat", "on", "mat", "[UNK]"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out / "tokenizer.json"))
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat " * 40)
    rows = tmp_path / "ids.jsonl"
    rows.write_text("\n".join(json.dumps({"input_ids": list(range(i, i + 9))}) for i in range(10)))
    from_text, from_rows = run_trains(out, ("--data", str(text), "--steps", "3", "--seq-len", "8", "--run-name", "text"),
                                      ("--data", str(rows), "--steps", "3", "--seq-len", "8", "--run-name", "rows"))
    assert from_text.returncode == 0, from_text.stderr
    assert from_rows.returncode == 0, from_rows.stderr
    assert "step 3/3" in from_rows.stdout
