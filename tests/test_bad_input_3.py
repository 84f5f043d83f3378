"""Bad input, round three (held-out cases a new user tried, issue 15): a path spelled like a preset, configs that
break in new ways, sharded indexes transformers cannot read, a closed stdout, --force over a user's files, recipe
files from other editors, and the exported train.py / model.py. Each case asserts the one line, the exit status and
that nothing was written or changed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from safetensors.torch import load_file, save_file

from bad_input_helpers import files_under, gpt2_folder, one_line, refused_unchanged, run_cli  # noqa: F401 (gpt2_folder: a fixture)
from graphsurgeon.capture import resolve
from graphsurgeon.capture.presets import PRESET_DIR, is_preset
from graphsurgeon.cli import main
from graphsurgeon.export import EXPORT_FILES, SCRIPTS, TRAINING_PRODUCTS, check_out_folder
from graphsurgeon.surgery.recipe import load_recipe
from graphsurgeon.surgery.spec import LoRAConfig


# ---- a path is a folder, never a preset --------------------------------------------------------------------
def test_a_path_spelled_like_a_preset_is_the_folder(gpt2_folder, tmp_path, monkeypatch):
    """`./tiny-gpt2` (and a bare `tiny-gpt2` when a model folder of that name is here) is the user's folder, as in
    from_pretrained; before, both silently opened the preset."""
    shutil.copytree(gpt2_folder, tmp_path / "tiny-gpt2")
    monkeypatch.chdir(tmp_path)
    for name in ("./tiny-gpt2", "tiny-gpt2", str(tmp_path / "tiny-gpt2")):
        recipe = resolve(name)
        assert recipe.weights_dir is not None and recipe.weights_dir.resolve() == tmp_path / "tiny-gpt2", name
        assert recipe.config["n_embd"] == 32 and recipe.note.startswith("real weights from")
    assert not is_preset("./gpt2") and not is_preset(str(PRESET_DIR / "gpt2")) and is_preset("gpt2")


# ---- configs and indexes -----------------------------------------------------------------------------------
def _config(**changes):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg).replace('"__nan__"', "NaN"))
    return edit


def _sharded(index_changes):
    def edit(folder: Path) -> None:
        tensors = load_file(folder / "model.safetensors")
        (folder / "model.safetensors").unlink()
        save_file(tensors, folder / "model-00001-of-00001.safetensors", metadata={"format": "pt"})
        index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in tensors}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index_changes(index)))
    return edit


CONFIGS = [  # (case, how the valid folder is broken, what the one line must say)
    ("heads_zero", _config(n_head=0), "config.json describes a model transformers cannot build: n_head = 0 divides a size"),
    ("nan_value", _config(layer_norm_epsilon="__nan__"), "config.json sets layer_norm_epsilon to NaN; give it a number"),
    ("index_without_metadata", _sharded(lambda i: {"weight_map": i["weight_map"]}),
     'model.safetensors.index.json has no "metadata" object, which transformers reads'),
    ("index_shard_outside_the_folder", _sharded(lambda i: {**i, "weight_map": {k: "../x/model.safetensors"
                                                                              for k in i["weight_map"]}}),
     "names the shard '../x/model.safetensors', which is not a file name in"),
]


@pytest.mark.parametrize("name,breaks,message", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_configs_and_indexes_refused_in_one_line(name, breaks, message, gpt2_folder, tmp_path, capsys):
    refused_unchanged(gpt2_folder, breaks, message, tmp_path, capsys)


def test_config_without_architectures_is_the_base_model(gpt2_folder, tmp_path):
    """As AutoModel.from_config: the model type's base model (before: "AutoModel is designed to be instantiated …")."""
    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    for archs in (None, []):
        cfg = json.loads((folder / "config.json").read_text())
        cfg.pop("architectures", None) if archs is None else cfg.update(architectures=archs)
        (folder / "config.json").write_text(json.dumps(cfg))
        recipe = resolve(str(folder))
        assert recipe.model_class() is transformers.GPT2Model
        recipe.check_weights(recipe.build("meta"))  # the LM's file fits its base model (as transformers reads it)


# ---- outputs -------------------------------------------------------------------------------------------------
def test_stdout_closed_from_the_start_refused_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", None)  # what Python sets when started with `>&-`
    code = main(["lora", "tiny-gpt2", "--layers", "0", "--random-weights", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "standard output is closed" in one_line(err) and files_under(tmp_path) == {}


def test_force_never_deletes_the_users_files_in_an_earlier_export(export, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(export, out)
    assert set(p.name for p in export.iterdir()) <= set(EXPORT_FILES)  # the list --force trusts is complete
    (out / "merged").mkdir()  # what train.py writes goes with the export it was trained from
    (out / "my_data.jsonl").write_text('{"input_ids": [1, 2]}\n')
    (out / "notes").mkdir()
    before = files_under(tmp_path)
    code, _, err = run_cli(["lora", "tiny-gpt2", "--layers", "1", "--random-weights", "--out", str(out), "--force"],
                           capsys)
    assert code == 2 and f"--force would replace the earlier export in {out}, which also holds files graphsurgeon " \
                          "did not write (my_data.jsonl, notes/); move them out" in one_line(err)
    assert files_under(tmp_path) == before and (out / "notes").is_dir()
    (out / "my_data.jsonl").unlink()
    (out / "notes").rmdir()
    check_out_folder(out, force=True)  # only the export and what its train.py wrote: replaced
    assert "merged" in TRAINING_PRODUCTS


# ---- recipe files --------------------------------------------------------------------------------------------
def test_recipe_with_a_bom_reads_and_a_huge_file_is_refused_unread(tmp_path, capsys):
    recipe = {"format": "graphsurgeon-recipe", "version": 1, "model_class": "BertModel", "steps": [
        {"op": "insert", "role": "q", "layer": 0, "module": "encoder.layer.0.attention.self.query",
         "config": LoRAConfig(r=2).as_dict()}]}
    (tmp_path / "r.json").write_text(json.dumps(recipe), encoding="utf-8-sig")  # as Notepad saves it
    assert load_recipe(tmp_path / "r.json") == recipe
    with (tmp_path / "big.json").open("wb") as f:
        f.truncate(17 * 2**20)  # sparse: no disk used
    code, out, err = run_cli(["lora", "tiny-bert", "--recipe", str(tmp_path / "big.json")], capsys)
    assert code == 2 and "big.json is 17 MB, far more than a recipe holds (at most 16 MB)" in one_line(err)


def test_recipe_out_never_replaces_a_users_file_nor_the_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = files_under(tmp_path)
    for argv, message in [
        (["--recipe-out", "notes.txt"], "--recipe-out notes.txt exists and is not a graphsurgeon recipe; choose another "
                                        "file name (only an earlier recipe is replaced)."),
        (["--out", "same", "--recipe-out", "same"], "--out and --recipe-out are both same; give the recipe another "
                                                    "file name"),  # before: the export was written, then exit 2
    ]:
        code, out, err = run_cli(["lora", "tiny-gpt2", "--random-weights", *argv], capsys)
        assert code == 2 and message in one_line(err) and files_under(tmp_path) == before


# ---- the exported folder -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    assert main(["lora", "tiny-gpt2", "--layers", "0", "--rank", "2", "--random-weights", "--out", str(out)]) == 0
    return out


def _train(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=folder, capture_output=True, text=True, timeout=300)


TRAIN = [  # (train.py arguments, data file to write, what the one line must say)
    (["--synthetic", "--device", "tpu"], None,
     "argument --device: invalid choice: 'tpu' (choose from 'cpu', 'cuda'); see `python train.py --help`."),
    (["--synthetic", "--lr", "-1"], None, "--lr -1.0 is not allowed: give a positive finite learning rate"),
    (["--synthetic", "--lr", "inf"], None, "--lr inf is not allowed"),
    (["--synthetic", "--steps", "-2"], None, "--steps -2 is not allowed: give 0 or more"),
    (["--data", "d.jsonl"], '{"text": "hello"}\n', "d.jsonl cannot be tokenized; give JSONL of token ids instead"),
    (["--data", "d.jsonl"], '{"input_ids": [1, true, 3]}\n', "d.jsonl line 1 is malformed (input_ids holds true/false; "
                                                              "token ids are integers)"),
    (["--data", "d.jsonl"], '{"input_ids": [1, 2], "label": true}\n', "d.jsonl line 1 is malformed (its label is "
                                                                       "true/false; give the class number"),
    (["--synthetic", "--grad-accum", "0"], None, "--grad-accum must be at least 1 (got 0)."),
    (["--synthetic", "--lr", "1e30"], None, "--lr 1e+30 is above 1, where AdamW can only diverge; give at most 1"),
    (["--data", "d.jsonl"], "[1, 2]\n", "d.jsonl line 1 is malformed (it is a JSON list, not an object)"),
]


def test_train_py_bad_arguments_in_one_line(export, capsys):
    """In-process (train.main), each: exit status 2, one line; one real process checks the user's view."""
    sys.path.insert(0, str(export))
    for name in ("model", *(script.removesuffix(".py") for script in SCRIPTS)):
        sys.modules.pop(name, None)
    try:
        import train
    finally:
        sys.path.remove(str(export))
    before = files_under(export)
    for args, data, message in TRAIN:
        if data is not None:
            (export / "d.jsonl").write_text(data)
            args = [a.replace("d.jsonl", str(export / "d.jsonl")) for a in args]
        with pytest.raises(SystemExit) as stop:
            train.main([*args] + ([] if "--steps" in args else ["--steps", "1"]))
        (export / "d.jsonl").unlink(missing_ok=True)
        assert stop.value.code == 2 and message in one_line(capsys.readouterr().err), args
    assert files_under(export) == before
    result = _train(export, "--synthetic", "--device", "tpu")
    assert result.returncode == 2 and "invalid choice: 'tpu'" in one_line(result.stderr)


def test_model_py_without_safetensors_says_so(export):
    code = ("import sys; sys.modules['safetensors'] = None; sys.modules['safetensors.torch'] = None\n"
            "try:\n    import model\nexcept ImportError as err:\n    print(err)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=export, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "model.py needs the safetensors package to read model.safetensors: pip install " \
                                    "safetensors", result.stderr


LOAD = [  # (how model.safetensors is changed, what WeightsError must say)
    (lambda t: t.update({"h.0.ln_1.weight": t.pop("transformer.h.0.ln_1.weight")}),
     "has no tensor 'transformer.h.0.ln_1.weight', which model.py needs"),
    (lambda t: t.update({"transformer.h.0.ln_1.weight": t["transformer.h.0.ln_1.weight"][:3]}),
     "'transformer.h.0.ln_1.weight' has shape [3] but model.py needs [64]"),
    (lambda t: t.update({"transformer.h.0.ln_1.weight": t["transformer.h.0.ln_1.weight"].int()}),
     "'transformer.h.0.ln_1.weight' is int32 but model.py needs float32"),  # was torch's "While copying …" error
]


@pytest.mark.parametrize("change,message", LOAD, ids=["renamed", "shape", "int-dtype"])
def test_load_model_names_the_tensor(change, message, export, tmp_path):
    import importlib.util

    folder = tmp_path / "copy"
    shutil.copytree(export, folder)
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors")
    spec = importlib.util.spec_from_file_location("exported_model_3", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(module.WeightsError) as info:
        module.load_model(str(folder))
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1
