"""The export plugs into the next step: AutoPeftModel loads the adapter (trained heads included) before and after
train.py; every run goes into runs/<name>/ and never changes the export; resume is bit for bit; a diverging run
stops before anything is saved."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, randomize  # noqa: E402
from test_export import (  # noqa: E402
    finish,
    inputs,
    load_exported,
    max_diff,
    run_train,
    run_trains,
    start_train,
)

CASES = {  # name -> (arch, head, PEFT task type, AutoPeftModel class, trained heads)
    "causal": ("gpt2", None, "CAUSAL_LM", "AutoPeftModelForCausalLM", None),
    "seq-cls": ("bert", "ForSequenceClassification", "SEQ_CLS", "AutoPeftModelForSequenceClassification",
                ["classifier"]),
    "encoder": ("bert", "Model", "FEATURE_EXTRACTION", "AutoPeftModelForFeatureExtraction", None),
}


def export_from_folder(tmp: Path, arch: str, head: str | None, **config) -> Path:
    """save_pretrained a tiny model, capture that folder, LoRA on q and v with random non-zero A and B, export."""
    source = tmp / "source"
    build(arch, head, **config).save_pretrained(source)
    cm = capture(str(source))
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
    randomize(cm)
    if head == "ForSequenceClassification":  # the export's head differs from the base's: only modules_to_save gives it
        with torch.no_grad():
            cm.gm.get_submodule("classifier").weight.add_(0.5)
    export_folder(cm, tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def gpt2_export(tmp_path_factory) -> Path:
    """The causal case exported once for the module (export_from_folder); a test copies it (`own_copy`) first."""
    return export_from_folder(tmp_path_factory.mktemp("gpt2"), "gpt2", None)


def own_copy(export: Path, where: Path) -> Path:
    """A copy of the shared export at where/out, for a test that runs train.py in it (runs/, chmod, edits)."""
    where.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(export, where / "out", ignore=shutil.ignore_patterns("__pycache__")))


def with_run(folder: Path, run: Path):
    """model.py of `folder` with the run's trained tensors."""
    model = load_exported(folder)
    trained = {k: v for k, v in load_file(str(run / "trainable.safetensors")).items() if not k.startswith("head.")}
    missing = set(trained) - set(model.state_dict())
    assert not missing, missing
    model.load_state_dict(trained, strict=False)
    return model


def first(out) -> torch.Tensor:
    return out["logits"] if "logits" in out else out[0]


def hashes(folder: Path) -> dict[str, str]:
    """Every file of the export folder (run folders left out) and its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "runs" not in p.relative_to(folder).parts}


def _head_config(head: str | None) -> dict:
    return {"num_labels": 3} if head == "ForSequenceClassification" else {}


@pytest.fixture(scope="module")
def exported_and_trained(gpt2_export, tmp_path_factory) -> dict:
    """case -> (export, its source folder, train.py's run, the --merge-only run): every case exported (causal: a copy
    of the module's gpt2 export), then the three train.py runs started at once, then the three merges at once (each
    a process of its own, as a user runs it; they only write under runs/r)."""
    outs = {}
    for case, (arch, head, *_) in CASES.items():
        tmp = tmp_path_factory.mktemp(case)
        if case == "causal":  # the module's gpt2 export (the same export_from_folder call)
            outs[case] = own_copy(gpt2_export, tmp), gpt2_export.parent / "source"
        else:
            outs[case] = export_from_folder(tmp, arch, head, **_head_config(head)), tmp / "source"
    runs = {case: start_train(out, "--synthetic", "--steps", "4", "--lr", "1e-2", "--run-name", "r", "--eval-split",
                              "0.25", "--eval-every", "2") for case, (out, _) in outs.items()}
    runs = {case: finish(proc) for case, proc in runs.items()}
    merges = {case: start_train(out, "--merge-only", str(out / "runs" / "r")) for case, (out, _) in outs.items()
              if runs[case].returncode == 0}
    merges = {case: finish(proc) for case, proc in merges.items()}
    return {case: (*outs[case], runs[case], merges.get(case)) for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_auto_peft_model_equals_model_py_before_and_after_training(case, exported_and_trained):
    import peft

    arch, head, task, auto, heads = CASES[case]
    out, source, result, merge = exported_and_trained[case]  # runs write runs/ only, never the export (tested below)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == task and config["modules_to_save"] == heads
    assert config["base_model_name_or_path"] == str(source.resolve())
    assert config["peft_version"] == peft.__version__ and "revision" in config
    x = inputs(arch)
    with torch.no_grad():
        ours = first(load_exported(out)(**x))
        loaded = first(getattr(peft, auto).from_pretrained(str(out)).eval()(**x))
        assert max_diff(ours, loaded) <= 1e-5
        assert max_diff(ours, first(build(arch, head, **({"num_labels": 3} if head else {})).eval()(**x))) > 1e-3
    assert result.returncode == 0, result.stderr
    run = out / "runs" / "r"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "eval_loss" in m] == [2, 4]
    measure = {"causal": "eval_perplexity", "seq-cls": "eval_accuracy", "encoder": "eval_accuracy"}[case]
    assert all(measure in m for m in metrics if "eval_loss" in m) and f"{measure} " in result.stdout
    with torch.no_grad():
        trained = first(with_run(out, run).eval()(**x))
        loaded = first(getattr(peft, auto).from_pretrained(str(run)).eval()(**x))
    assert max_diff(trained, ours) > 1e-4  # training moved the LoRA (and the head)
    assert max_diff(trained, loaded) <= 1e-5
    assert merge.returncode == 0, merge.stderr
    with torch.no_grad():
        merged = type(build(arch, head, **({"num_labels": 3} if head else {}))).from_pretrained(str(run / "merged"))
        assert max_diff(trained, first(merged.eval()(**x))) <= 1e-5
    if heads:
        saved = load_file(str(run / "adapter_model.safetensors"))
        assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(saved)


def test_base_model_is_the_hub_id_of_a_cache_snapshot_else_the_absolute_folder(tmp_path, monkeypatch):
    from graphsurgeon.export.adapter import base_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--org--tiny-model" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    monkeypatch.chdir(tmp_path)
    assert base_model(str(snapshot)) == ("org/tiny-model", commit)
    assert base_model("plain") == (str(tmp_path / "plain"), None)  # typed relative, recorded absolute
    assert base_model("<module>") == (None, None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert base_model("org/not-cached") == ("org/not-cached", None)


def test_a_preset_with_random_weights_names_its_export_as_the_base_model(tmp_path, monkeypatch):
    """A preset without published weights (or any export of random weights) has no folder or hub id PEFT could load
    its base from: the adapter names the export folder itself (absolute), which AutoPeftModel loads offline."""
    from peft import AutoPeftModelForCausalLM

    from graphsurgeon.export.adapter import base_model

    cm = capture("tiny-gpt2")
    assert cm.weights == "random"
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
    randomize(cm)
    monkeypatch.chdir(tmp_path)
    export_folder(cm, Path("exp"), random_weights=True)  # typed relative: recorded absolute (PEFT resolves a relative one from the cwd)
    config = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "exp") and config["revision"] is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path.parent)
    x = inputs("gpt2")
    with torch.no_grad():
        loaded = first(AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "exp")).eval()(**x))
        ours = first(load_exported(tmp_path / "exp")(**x))
    assert max_diff(ours, loaded) <= 1e-5
    (tmp_path / "src").mkdir()  # a folder exported with random weights is not the base either: its weights are real
    assert base_model(str(tmp_path / "src"), "random", tmp_path / "exp") == (str(tmp_path / "exp"), None)
    assert base_model(str(tmp_path / "src"), "real", tmp_path / "exp") == (str(tmp_path / "src"), None)


def test_schedule_and_help(gpt2_export, tmp_path, capsys):
    from argparse import Namespace

    from test_train_script import import_train

    train = import_train(own_copy(gpt2_export, tmp_path))
    at = lambda schedule, warmup, step: train.lr_at(step, Namespace(lr=1.0, warmup=warmup, steps=20,  # noqa: E731
                                                                    schedule=schedule))
    assert [at("cosine", 4, s) for s in (1, 4, 12, 20)] == [0.25, 1.0, pytest.approx(0.5), pytest.approx(0.0)]
    assert [at("linear", 4, s) for s in (2, 8, 20)] == [0.5, 0.75, 0.0]
    assert [at("constant", 0.1, s) for s in (1, 2, 3, 20)] == [0.5, 1.0, 1.0, 1.0]  # 0.1 of 20 steps: 2 steps
    text = sys.modules["train_args"].parser().format_help()  # the module next to that train.py
    for shown in ("(default: 0.0002)", "(default: cosine)", "(default: 1.0)", "(default: 0.03)", "(default: 1)"):
        assert shown in text, shown


def test_runs_never_change_the_export_and_resume_is_bit_for_bit(gpt2_export, tmp_path):
    out = own_copy(gpt2_export, tmp_path)
    before = hashes(out)
    common = ("--synthetic", "--lr", "1e-2", "--schedule", "constant", "--warmup", "3", "--grad-accum", "2")
    whole, half = run_trains(out, (*common, "--steps", "20", "--run-name", "whole"),
                             (*common, "--steps", "10", "--run-name", "half"))
    assert whole.returncode == 0, whole.stderr
    assert half.returncode == 0, half.stderr
    assert hashes(out) == before and not (out / "__pycache__").exists()
    again = run_train(out, "--resume", "half", "--steps", "20")  # a run's name finds its folder under runs/
    assert again.returncode == 0 and "resumed" in again.stdout, again.stderr
    a, b = (load_file(str(out / "runs" / r / "trainable.safetensors")) for r in ("whole", "half"))
    assert set(a) == set(b) and max(max_diff(a[k], b[k]) for k in a) <= 1e-6
    metrics = [json.loads(line) for line in (out / "runs" / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 21))
    state = json.loads((out / "runs" / "half" / "trainer_state.json").read_text())
    assert state["step"] == 20
    assert json.loads((out / "runs" / "half" / "args.json").read_text())["grad_accum"] == 2
    assert hashes(out) == before


def test_nonfinite_source_weights_stop_before_anything_is_saved(gpt2_export, tmp_path, capsys):
    from safetensors.torch import save_file
    from test_train_script import refused  # main() in-process: exit 2, one line

    out = own_copy(gpt2_export, tmp_path)
    tensors = load_file(str(out / "model.safetensors"))
    tensors["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    save_file(tensors, str(out / "model.safetensors"))
    before = hashes(out)
    line = refused(out, "--synthetic", "--steps", "30", "--run-name", "x", capsys=capsys)
    assert "not finite at step 1" in line and "nothing was saved" in line
    assert "source weights" in line and "c_fc.weight" in line
    assert not (out / "runs" / "x").exists() and hashes(out) == before


def test_diverging_loss_stops_naming_the_step_and_the_learning_rate(gpt2_export, tmp_path, monkeypatch, capsys):
    """A loss that turns infinite at step 6 (as a too-high learning rate makes it): the run stops there, its step-5
    save stays as it was, and the sentence blames the learning rate; --lr above the bound is refused."""
    from test_train_script import import_train, refused

    out = own_copy(gpt2_export, tmp_path)
    train = import_train(out)
    forward, calls = train.Task.forward, []

    def diverging(self, *a, **k):
        calls.append(1)
        loss = forward(self, *a, **k)
        return loss * float("inf") if len(calls) > 5 else loss

    monkeypatch.setattr(train.Task, "forward", diverging)
    with pytest.raises(SystemExit) as stop:
        train.main(["--synthetic", "--steps", "10", "--save-every", "5", "--run-name", "x", "--lr", "0.5"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and "loss is not finite at step 6 (lr 0.173 of --lr 0.5)" in line and "learning rate" in line, line
    state = json.loads((out / "runs" / "x" / "trainer_state.json").read_text())
    assert state["step"] == 5 and "keeps its last save" in line
    monkeypatch.undo()
    assert "above 1, where AdamW can only diverge" in refused(out, "--synthetic", "--lr", "1e30", capsys=capsys)


def test_bad_runs_are_one_sentence(gpt2_export, tmp_path, monkeypatch, capsys):
    """A run folder from another export, a run without its optimizer state, an existing run name, an eval file whose
    rows do not fit, a read-only export: one line each, exit status 2, the export unchanged."""
    import errno
    import os
    import shutil

    from test_train_script import import_train, refused

    out = own_copy(gpt2_export, tmp_path / "a")
    other = tmp_path / "b"
    build("gpt2").save_pretrained(other / "source")
    cm = capture(str(other / "source"))
    add_lora(cm, roles=("q",), config=LoRAConfig(r=2, alpha=4))
    export_folder(cm, other / "out")
    train = import_train(out)
    train.main(["--synthetic", "--steps", "2", "--run-name", "r"])
    run = out / "runs" / "r"
    shutil.copytree(run, other / "out" / "runs" / "r")
    shutil.copytree(run, out / "runs" / "no-optimizer")
    (out / "runs" / "no-optimizer" / "optimizer.safetensors").unlink()
    evals = tmp_path / "eval.jsonl"
    evals.write_text('{"input_ids": [1, 2]}\n{"input_ids": [3, 500]}\n')
    before = hashes(out)
    capsys.readouterr()  # save_pretrained's progress bars, the run's output
    assert "was trained from another export" in refused(other / "out", "--resume", str(other / "out" / "runs" / "r"),
                                                        capsys=capsys)
    train = import_train(out)
    cases = {
        ("--resume", str(out / "runs" / "no-optimizer")): "has no optimizer.safetensors, so it cannot be resumed",
        ("--synthetic", "--run-name", "r"): "exists; continue it with --resume",
        ("--synthetic", "--eval-data", str(evals)): f"{evals} line 2 is malformed (input_ids must be a non-empty list "
                                                    "of integers in [0, 101))",
        ("--synthetic", "--eval-split", "1.5"): "--eval-split 1.5 is not a fraction",
        ("--merge-only", str(tmp_path / "nowhere")): "is not a run folder",
    }
    for args, why in cases.items():
        assert why in refused(out, *args, "--steps", "3", capsys=capsys), args
    assert "has already trained 2 steps, so --steps 2 continues nothing" in refused(
        out, "--resume", str(out / "runs" / "r"), "--steps", "2", capsys=capsys)  # never rewrites the finished run
    if os.geteuid() == 0:  # root writes through chmod: the file system's answer is given instead
        def read_only(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(sys.modules["train_save"].tempfile, "TemporaryFile", read_only)
    else:
        out.chmod(0o555)
    try:
        line = refused(out, "--synthetic", "--steps", "3", "--run-name", "ro", capsys=capsys)
    finally:
        out.chmod(0o755)
    assert "cannot write the run folder" in line and "--runs-dir" in line
    assert hashes(out) == before and sorted(p.name for p in (out / "runs").iterdir()) == ["no-optimizer", "r"]
