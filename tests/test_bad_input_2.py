"""Bad input, round two (issue 15): one table per kind. Each case asserts the one-line message, the exit status,
and that nothing was written or changed. CLI cases run `main([...])` in-process; signals, broken pipes and
Ctrl-C while importing need a real process.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from graphsurgeon.cli import main
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.surgery.recipe import RecipeError, check_recipe, load_recipe
from graphsurgeon.surgery.spec import LoRAConfig, LoRAConfigError

GS = str(Path(sys.executable).with_name("graphsurgeon"))


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (hidden temp files included): 'nothing was written or changed'."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---- weights that do not match their config ------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 written by save_pretrained: the valid folder every case below breaks one way."""
    folder = tmp_path_factory.mktemp("gpt2") / "gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0,
    )).save_pretrained(folder)
    return folder


def _config(key, value):
    def edit(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg[key] = value
        (folder / "config.json").write_text(json.dumps(cfg))
    return edit


def _tensors(change):
    def edit(folder: Path) -> None:
        sd = load_file(folder / "model.safetensors")
        change(sd)
        save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    return edit


def _drop_layer_1(sd):
    for k in [k for k in sd if k.startswith("transformer.h.1.")]:
        del sd[k]


WEIGHTS = [  # (case, how the valid folder is broken, extra arguments, what the one line must say)
    ("config_has_fewer_layers", _config("n_layer", 1), [],
     "do not match config.json: 12 tensors in the file are not used by the model (transformer.h.1.attn.c_attn.bias [96]"),
    ("config_has_no_layers", _config("n_layer", 0), ["--meta"],  # the headers are checked for --meta too
     "tensors in the file are not used by the model (transformer.h.0."),
    ("file_lacks_layer_1", _tensors(_drop_layer_1), [],
     "12 tensors the model expects are missing from the file (transformer.h.1.attn.c_attn.bias [96]"),
    ("tensor_of_another_shape", _tensors(lambda sd: sd.update({"transformer.h.0.mlp.c_fc.weight": torch.zeros(32, 100)})),
     [], "1 tensor has another shape in the file than the config gives (transformer.h.0.mlp.c_fc.weight [32, 100] in "
         "the file, [32, 128] expected)"),
    ("stray_tensor_in_a_module", _tensors(lambda sd: sd.update({"transformer.h.0.attn.extra": torch.zeros(3)})), [],
     "1 tensor in the file is not used by the model (transformer.h.0.attn.extra [3])"),
    ("hidden_not_divisible_by_heads", _config("n_head", 3), [],
     "config.json describes a model transformers cannot build: `embed_dim` must be divisible by num_heads"),
    ("negative_vocab_size", _config("vocab_size", -5), [],
     "config.json describes a model transformers cannot build: vocab_size = -5 is negative"),
    ("config_transformers_rejects", _config("layer_norm_epsilon", "tiny"), [], "fix config.json"),
    ("weights_file_named_otherwise", lambda f: (f / "model.safetensors").rename(f / "weights.safetensors"), [],
     "has weights.safetensors but no model.safetensors"),
    ("weights_link_is_broken", lambda f: ((f / "model.safetensors").unlink(),
                                          (f / "model.safetensors").symlink_to(f / "gone.safetensors")), [],
     "model.safetensors is a link to"),
    ("architectures_is_a_string", _config("architectures", "GPT2LMHeadModel"), [],
     "architectures in config.json is 'GPT2LMHeadModel'; it should be a list of class names"),
    ("architectures_of_another_model_type", _config("architectures", ["BertModel"]), [],
     "config.json names BertModel (a 'bert' model) but its model_type is 'gpt2'; make architectures and model_type agree"),
    ("architectures_not_a_model_class", _config("architectures", ["AutoTokenizer"]), [],
     "names 'AutoTokenizer' in architectures, which is not a transformers model class"),
    ("an_exported_folder", lambda f: [(f / n).write_text("{}") for n in ("surgery.json", "model.py")], [],
     "is a graphsurgeon export, whose model.safetensors holds the LoRA weights too; open its merged/ folder"),
    ("index_names_a_missing_shard", lambda f: (f / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"wte.weight": "model-00002-of-00002.safetensors"}})), [],
     "lists the shard model-00002-of-00002.safetensors, which is not in"),
]


@pytest.mark.parametrize("name,breaks,extra,message", WEIGHTS, ids=[c[0] for c in WEIGHTS])
@pytest.mark.parametrize("command", ["inspect", "lora"])
def test_weights_that_do_not_match_the_config(name, breaks, extra, message, command, gpt2_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    breaks(folder)
    before = files_under(tmp_path)
    args = ["--out", str(tmp_path / "out"), "--recipe-out", str(tmp_path / "r.json")] if command == "lora" else []
    code, out, err = run_cli([command, str(folder), *extra, *args], capsys)
    assert code == 2 and message in one_line(err) and out == ""
    assert files_under(tmp_path) == before  # nothing written, nothing changed


def test_missing_weights_allowed_only_when_asked_and_said_loudly(gpt2_folder, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    _tensors(_drop_layer_1)(folder)
    code, out, err = run_cli(["lora", str(folder), "--allow-missing-weights", "--layers", "0",
                              "--out", str(tmp_path / "out")], capsys)
    assert code == 0
    assert err.startswith("warning: real weights from") and "12 tensors missing from the file initialised randomly" in err
    assert "some weights random" in out
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "**Weights: real, partly random.**" in readme and "transformer.h.1.attn.c_attn.bias" in readme
    assert json.loads((tmp_path / "out" / "surgery.json").read_text())["weights"]["kind"] == "partial"


def test_a_base_model_may_skip_another_tasks_head_and_says_so(tmp_path, capsys):
    """bert-base-uncased's file is BertForPreTraining's: BertModel reads it, naming the parts it does not use."""
    transformers.BertForPreTraining(transformers.BertConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50,
        max_position_embeddings=32)).save_pretrained(tmp_path / "bert")
    cfg = json.loads((tmp_path / "bert" / "config.json").read_text())
    (tmp_path / "bert" / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertModel"]}))
    code, out, err = run_cli(["inspect", str(tmp_path / "bert"), "--tree", "--depth", "0"], capsys)
    assert code == 0 and "BertModel does not use the file's cls.* (parts of another task's model)" in out


# ---- random weights said loudly --------------------------------------------------------------------------
RANDOM = [  # (source arguments, what the one line must say)
    (["tiny-gpt2"], "random weights (tiny-gpt2 is a preset without published weights): the export would hold "
                    "weights that were never trained; pass --random-weights"),
    (["tiny-bert", "--meta"], "random weights (tiny-bert is a preset without published weights): the export"),
    ("config_only", "has no model.safetensors): the export would hold weights that were never trained"),
]


@pytest.mark.parametrize("source,message", RANDOM, ids=["preset", "meta", "config-only-folder"])
def test_export_of_random_weights_refused_without_the_flag(source, message, gpt2_folder, tmp_path, capsys):
    if source == "config_only":
        (tmp_path / "cfg").mkdir()
        shutil.copy(gpt2_folder / "config.json", tmp_path / "cfg" / "config.json")
        source = [str(tmp_path / "cfg")]
    before = files_under(tmp_path)
    code, out, err = run_cli(["lora", *source, "--out", str(tmp_path / "out"), "--recipe-out",
                              str(tmp_path / "r.json")], capsys)
    assert code == 2 and message in one_line(err)
    assert files_under(tmp_path) == before


def test_random_export_with_the_flag_says_so_everywhere(tmp_path, capsys):
    code, out, err = run_cli(["lora", "tiny-bert", "--layers", "0", "--out", str(tmp_path / "out"),
                              "--random-weights", "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["exported_weights"]["kind"] == "random" and "without published weights" in data["weights"]
    assert (tmp_path / "out" / "README.md").read_text().splitlines()[2].startswith(
        "**Weights: random.** `model.safetensors` holds random weights (tiny-bert is a preset")
    assert json.loads((tmp_path / "out" / "surgery.json").read_text())["weights"] == {
        "kind": "random", "note": "random weights (tiny-bert is a preset without published weights)"}


# ---- LoRA hyper-parameters: one place, every caller ------------------------------------------------------
CONFIGS = [  # (LoRAConfig keywords, text the error must contain)
    ({"alpha": math.nan}, "alpha = nan is not allowed: alpha must be a finite number greater than 0"),
    ({"alpha": math.inf}, "alpha = inf is not allowed"),
    ({"alpha": -5}, "alpha = -5 is not allowed"),
    ({"alpha": 0}, "alpha = 0 is not allowed"),
    ({"alpha": "16"}, "alpha = '16' is not allowed"),
    ({"r": 0}, "r = 0 is not allowed: r must be a whole number of at least 1"),
    ({"r": 2.5}, "r = 2.5 is not allowed"),
    ({"r": True}, "r = True is not allowed"),
    ({"dropout": 1.0}, "dropout = 1.0 is not allowed: dropout must be a probability p with 0 <= p < 1"),
    ({"dropout": -0.1}, "dropout = -0.1 is not allowed"),
    ({"dropout": math.nan}, "dropout = nan is not allowed"),
    ({"init": "xavier"}, "init = 'xavier' is not allowed: init must be one of kaiming, gaussian"),
    ({"use_rslora": "yes"}, "use_rslora = 'yes' is not allowed: use_rslora must be true or false"),
]


@pytest.mark.parametrize("kwargs,message", CONFIGS, ids=[f"{k}={v!r}" for c in CONFIGS for k, v in c[0].items()])
def test_lora_config_is_the_one_check(kwargs, message):
    with pytest.raises(LoRAConfigError) as info:
        LoRAConfig(**kwargs)
    assert message in str(info.value) and isinstance(info.value, ValueError)


LORA_ARGS = [  # (lora arguments, what the one line must say); all refused before the model is captured
    (["--alpha", "nan"], "--alpha nan is not allowed: alpha must be a finite number greater than 0 (e.g. 16)."),
    (["--alpha", "inf"], "--alpha inf is not allowed"),
    (["--alpha", "-5"], "--alpha -5.0 is not allowed"),
    (["--dropout", "nan"], "--dropout nan is not allowed: dropout must be a probability"),
    (["--rank", "-3"], "--rank -3 is not allowed: r must be a whole number of at least 1"),
    (["--rank", "x"], "argument --rank/-r: invalid int value: 'x'; see `graphsurgeon lora --help`."),
    (["--init", "xavier"], "argument --init: invalid choice: 'xavier'"),
    (["--layers", ""], "--layers is empty: give all, a range like 0-5 or a list like 0,3."),
    (["--layers", " "], "--layers is empty"),
    (["--layers", "3-1"], "--layers '3-1' is a reversed range: write 1-3"),
    (["--layers", "1-0"], "--layers '1-0' is a reversed range: write 0-1"),
    (["--layers", "0,,1"], "--layers '0,,1' has an empty item"),
    (["--layers", "-1"], "--layers '-1' is not a layer number"),
    (["--layers", "one"], "--layers 'one' is not a layer number"),
    (["--targets", ","], "--targets is empty: give roles like q,v."),
    (["--recipe", "r.json", "--rank", "4"], "--recipe replays its own targets and hyper-parameters; drop --rank."),
    (["--map-by-role"], "--map-by-role maps a recipe's steps; give it with --recipe FILE."),
    (["--recipe-out", "."], "--recipe-out . is a folder; give a file name like recipe.json."),
    (["--recipe-out", "no/such/dir/r.json"], "the folder no/such/dir does not exist"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--recipe-out", ""], "--recipe-out is empty: give a file name."),
    (["--recipe", " "], "--recipe is empty: give a file name."),
]


@pytest.mark.parametrize("argv,message", LORA_ARGS, ids=[" ".join(c[0]) or "empty" for c in LORA_ARGS])
def test_lora_arguments_refused_in_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["lora", "tiny-bert", *argv, "--out", "out"], capsys)
    assert code == 2 and message in one_line(err) and out == ""
    assert files_under(tmp_path) == {}


@pytest.mark.parametrize("argv,message", [
    (["inspect", ""], "the model name is empty; give a preset"),
    (["lora", "tiny-bert", "--out", ""], "--out is empty: give a folder name."),
    (["inspect", "tiny-bert", "--depth", "x"], "argument --depth: invalid int value: 'x'; see `graphsurgeon inspect --help`."),
    (["lora", "tiny-bert", "--rank"], "argument --rank/-r: expected one argument"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["lora", "tiny-bert", "--layers", "0-999999999999"], "layer 2 is out of range: this model has layers 0-1."),
])
def test_command_line_mistakes_in_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and message in one_line(err) and files_under(tmp_path) == {}


def test_layers_beyond_a_model_without_repeated_layers():
    from graphsurgeon.surgery.targets import TargetError, parse_layers

    with pytest.raises(TargetError, match="this model has no numbered \\(repeated\\) layers; use --layers all"):
        parse_layers("0", 0)


def test_editor_panel_and_recipe_replay_go_through_lora_config():
    from graphsurgeon.capture import capture
    from graphsurgeon.ui.operate.session import EditSession

    cm = capture("tiny-bert")
    s = EditSession(cm)
    s.drop("encoder.layer.0.attention.self", "m:encoder.layer.0.attention.self.query", config=LoRAConfig(r=4))
    code = cm.gm.code
    for change, message in [({"alpha": math.nan}, "alpha = nan is not allowed"),
                            ({"dropout": 1.0}, "dropout = 1.0 is not allowed"), ({"r": 0}, "r = 0 is not allowed")]:
        with pytest.raises(GraphsurgeonError, match=message):
            s.edit("encoder.layer.0.attention.self.lora_q", **change)
    assert cm.gm.code == code and len(s.history.done) == 1


# ---- recipes --------------------------------------------------------------------------------------------
def _recipe(**top) -> dict:
    step = {"op": "insert", "role": "q", "layer": 0, "module": "encoder.layer.0.attention.self.query",
            "config": LoRAConfig(r=4).as_dict()}
    return {"format": "graphsurgeon-recipe", "version": 1, "model_class": "BertModel", "steps": [step], **top}


def _step(**changes) -> dict:
    data = _recipe()
    data["steps"][0] = {k: v for k, v in {**data["steps"][0], **changes}.items() if v is not ...}
    return data


RECIPES = [  # (recipe data, text the one line must contain)
    (_step(op=...), "step 1 lacks 'op' (one of insert, insert_bare, change, remove, connect)"),
    (_step(op="add"), "step 1 has op 'add'; recipes know insert"),
    (_recipe(steps=["insert q"]), "step 1 is str \"insert q\", not an object with op, role, layer, module"),
    (_step(config={**LoRAConfig().as_dict(), "rank": 8}), "step 1 config key 'rank' is unknown; the keys are r, alpha"),
    (_step(config={"r": 8}), "step 1 config lacks 'alpha'"),
    (_step(config={**LoRAConfig().as_dict(), "alpha": -5}), "step 1 alpha = -5 is not allowed"),
    (_step(config={**LoRAConfig().as_dict(), "r": "8"}), "step 1 r = '8' is not allowed"),
    (_step(config=[8, 16]), "step 1 config must be an object with the keys r, alpha"),
    (_step(layer="0"), "step 1 layer is '0'; give a layer number ≥ 0"),
    (_step(layer=-1), "step 1 layer is -1"),
    (_step(role=3), "step 1 role is 3"),
    (_step(module=...), "step 1 (insert) lacks 'module'"),
    (_step(rol="q"), "step 1 (insert) has an unknown key 'rol'"),
    (_step(onto="add_3"), "step 1 (insert) has an unknown key 'onto'"),
    (_recipe(model_class=None), "model_class is None; give the class the recipe was made on"),
    (_recipe(steps={"op": "insert"}), "steps is dict, not a list of steps"),
    (_recipe(version=2), "version 2 was written by a newer graphsurgeon; this one reads version 1"),
    (_recipe(version="1"), "version is '1'; this graphsurgeon reads version 1"),
    (_recipe(format="peft"), "format is 'peft': not a graphsurgeon recipe"),
    (_recipe(extra=1), "unknown key 'extra' (a recipe has format, version, model_class, steps)"),
]


@pytest.mark.parametrize("data,message", RECIPES, ids=[m.split(";")[0][:40] for _, m in RECIPES])
def test_recipe_fields_checked_before_anything_changes(data, message, tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(data))
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.json")
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_valid_recipe_passes_and_all_problems_are_named_at_once():
    check_recipe(_recipe())
    with pytest.raises(RecipeError) as info:
        check_recipe(_recipe(steps=[_step(op=...)["steps"][0], "x", _step(layer=-1)["steps"][0]]))
    assert "step 1 lacks 'op'" in str(info.value) and "step 2 is str" in str(info.value) and "step 3 layer is -1" in str(info.value)


def test_recipe_from_another_model_refused_by_name_or_mapped_loudly(tmp_path, capsys):
    recipe = tmp_path / "bert.json"
    assert main(["lora", "tiny-bert", "--layers", "0", "--rank", "4", "--recipe-out", str(recipe)]) == 0
    before = files_under(tmp_path)
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(recipe), "--out", str(tmp_path / "out"),
                              "--random-weights"], capsys)
    assert code == 2 and "this recipe was made on BertModel (encoder.layer.0.attention.self.query, …), not on this " \
                          "GPT2LMHeadModel; replay it on a BertModel, or map its steps by role and layer (--map-by-role)" \
                          in one_line(err)
    assert files_under(tmp_path) == before
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(recipe), "--map-by-role", "--json"], capsys)
    assert code == 0 and [(r["layer"], r["role"], r["tensor"]) for r in json.loads(out)["targets"]] == [
        (0, "q", "transformer.h.0.attn.c_attn[0:64]"), (0, "v", "transformer.h.0.attn.c_attn[128:192]")]
    assert err.startswith("warning: recipe made on BertModel replayed by role and layer onto GPT2LMHeadModel: "
                          "step 1: encoder.layer.0.attention.self.query → transformer.h.0.attn.c_attn[0:64]")


def _bert_recipe(tmp_path: Path, steps) -> Path:
    data = _recipe()
    data["steps"] = steps(data["steps"][0])
    (tmp_path / "r.json").write_text(json.dumps(data))
    return tmp_path / "r.json"


REPLAYS = [  # (the recipe's steps from a valid insert step, what the one line must say); nothing changes
    (lambda s: [s, s], "step 2 (insert on role 'q' of layer 0) is refused: linear: "
                       "encoder.layer.0.attention.self.lora_q already adapts this tensor"),
    (lambda s: [{k: s[k] for k in ("role", "layer", "module")} | {"op": "remove"}],
     "step 1 (remove on role 'q' of layer 0) is refused: there is no LoRA block at 'encoder.layer.0.attention.self.lora_q'"),
    (lambda s: [s | {"config": s["config"] | {"r": 65}}],
     "step 1 (insert on role 'q' of layer 0) is refused: linear: rank r must be between 1 and min(in, out) = 64"),
    (lambda s: [s | {"layer": 7}], "step 1 (insert LoRA on role 'q' of layer 7) has no target in this BertModel"),
    (lambda s: [s | {"module": "bert.encoder.layer.0.attention.self.query"}],
     "step 1 adapts bert.encoder.layer.0.attention.self.query, but this BertModel's 'q' of layer 0 is "
     "encoder.layer.0.attention.self.query: the recipe was made on another model"),
]


@pytest.mark.parametrize("steps,message", REPLAYS, ids=["twice", "remove-nothing", "rank-65", "layer-7", "other-module"])
def test_recipe_that_does_not_fit_changes_nothing(steps, message, tiny_bert, tmp_path):
    from graphsurgeon.surgery.recipe import replay

    code, params = tiny_bert.gm.code, [n for n, _ in tiny_bert.gm.named_parameters()]
    with pytest.raises(RecipeError) as info:
        replay(tiny_bert, load_recipe(_bert_recipe(tmp_path, steps)))
    assert message in str(info.value)
    assert tiny_bert.gm.code == code and [n for n, _ in tiny_bert.gm.named_parameters()] == params
    assert tiny_bert.loras == {}


@pytest.mark.parametrize("content,message", [
    (b"\xff\xfe", "cannot read the recipe {f}: 'utf-8' codec can't decode byte 0xff"),
    (b"[" * 100000 + b"]" * 100000, "cannot read the recipe {f}: it is nested too deeply to be a recipe"),
    (b"", "cannot read the recipe {f}: Expecting value"),
    (b"[1, 2]", "{f} is JSON but not a graphsurgeon recipe"),
], ids=["not-utf8", "nested", "empty", "a-list"])
def test_recipe_files_that_are_no_recipe(content, message, tmp_path):
    (tmp_path / "r.json").write_bytes(content)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "r.json")
    assert message.format(f=tmp_path / "r.json") in str(info.value)


def test_an_exports_surgery_json_replays_as_its_recipe(tmp_path, capsys):
    assert main(["lora", "tiny-gpt2", "--layers", "1", "--rank", "2", "--random-weights", "--out", str(tmp_path / "x")]) == 0
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(tmp_path / "x" / "surgery.json"), "--json"], capsys)
    data = json.loads(out)
    assert code == 0 and [(r["layer"], r["role"]) for r in data["targets"]] == [(1, "q"), (1, "v")] and err == ""


def test_recipe_cli_refuses_bad_fields_before_capture(tmp_path, capsys):
    (tmp_path / "r.json").write_text(json.dumps(_step(config={**LoRAConfig().as_dict(), "alpha": -5})))
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(tmp_path / "r.json")], capsys)
    assert code == 2 and "r.json is not a valid recipe: step 1 alpha = -5 is not allowed" in one_line(err)


# ---- outputs that cannot be written ----------------------------------------------------------------------
def _no_space(*args, **kwargs):
    from safetensors import SafetensorError

    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                          '"No space left on device" })')


class _FullFile:
    def __init__(self, fd, *a, **k):
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


UNWRITABLE = [  # (case, arguments after the model, patch, text of the one line)
    ("out_in_proc", ["--out", "/proc/graphsurgeon-x"], None,
     "cannot write the export to /proc/graphsurgeon-x: No such file or directory; nothing was written"),
    ("recipe_out_in_proc", ["--recipe-out", "/proc/graphsurgeon-x.json"], None,
     "cannot write the recipe to /proc/graphsurgeon-x.json: No such file or directory; nothing was written"),
    ("disk_full_export", ["--out", "{tmp}/out"], ("graphsurgeon.export.save_file", _no_space),
     "cannot write the export to {tmp}/out: No space left on device; nothing was written, free some space"),
    ("disk_full_recipe", ["--recipe-out", "{tmp}/r.json"], ("graphsurgeon.surgery.recipe.os.fdopen", _FullFile),
     "cannot write the recipe to {tmp}/r.json: No space left on device; nothing was written"),
    ("out_is_a_file", ["--out", "{tmp}/file"], None, "{tmp}/file exists and is not empty; choose another folder"),
]


@pytest.mark.parametrize("name,argv,patch,message", UNWRITABLE, ids=[c[0] for c in UNWRITABLE])
def test_unwritable_outputs_one_line_nothing_left(name, argv, patch, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("keep me")
    if patch:
        monkeypatch.setattr(*patch)
    before = files_under(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run_cli(["lora", "tiny-gpt2", "--layers", "0", "--random-weights", *argv], capsys)
    assert code == 2 and message.format(tmp=tmp_path) in one_line(err)
    assert files_under(tmp_path) == before  # no temp folder, no half-written file


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_out_may_not_be_the_models_own_folder(force, gpt2_folder, tmp_path, capsys):
    shutil.copytree(gpt2_folder, tmp_path / "model")
    before = files_under(tmp_path)
    for out in (tmp_path / "model", tmp_path):
        code, _, err = run_cli(["lora", str(tmp_path / "model"), "--out", str(out)] + (["--force"] if force else []),
                               capsys)
        assert code == 2 and (f"{out} is the model's own folder or holds it" in one_line(err) or
                              (not force and "exists and is not empty" in err))
    assert files_under(tmp_path) == before


def test_force_replaces_only_an_earlier_export(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    code, _, err = run_cli(["lora", "tiny-gpt2", "--random-weights", "--out", str(tmp_path / "mine"), "--force"], capsys)
    assert code == 2 and "--force only replaces an earlier graphsurgeon export (a folder with surgery.json), and " \
                         f"{tmp_path / 'mine'} holds thesis.tex; choose another folder." in one_line(err)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


class _FullStdout:
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        pass


def test_stdout_on_a_full_disk(monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _FullStdout())
    code = main(["lora", "tiny-gpt2", "--layers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and one_line(err) == "error: cannot write the output: No space left on device."


def test_os_error_reading_a_recipe(tmp_path, capsys):
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(tmp_path)], capsys)
    assert code == 2 and f"cannot read the recipe {tmp_path}: Is a directory" in one_line(err)


# ---- signals, Ctrl-C, a closed stdout: real processes ----------------------------------------------------
def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


SLOW_EXPORT = textwrap.dedent("""
    import sys, time
    import graphsurgeon.export as export
    write = export._write
    def slow_write(cm, folder):  # the files are written, the folder is not yet renamed: stop it here
        write(cm, folder)
        print("written", flush=True)
        time.sleep(60)
    export._write = slow_write
    from graphsurgeon.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_during_export_removes_the_temporary_folder(tmp_path):
    """A plain `kill` (what `timeout` sends) in the middle of an export, in a real process."""
    p = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, "lora", "tiny-gpt2", "--layers", "0", "--random-weights",
                          "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env())
    try:
        assert p.stdout.readline().strip() == "written"
        assert [q.name for q in tmp_path.iterdir()][0].startswith(".out.")  # the temporary folder, filled
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 143 and err.strip() == "error: terminated by SIGTERM; nothing was left half-written."
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig,status,message", [
    (signal.SIGHUP, 129, "error: terminated by SIGHUP; nothing was left half-written."),
    (signal.SIGINT, 130, "error: interrupted; nothing was left half-written."),
    (signal.SIGTERM, 143, "error: terminated by SIGTERM; nothing was left half-written."),
], ids=["SIGHUP", "SIGINT", "SIGTERM"])
def test_signal_delivered_during_export_in_process(sig, status, message, tmp_path, monkeypatch, capsys):
    """The same, in this process: the signal arrives once every file of the temporary folder is written."""
    import graphsurgeon.export as export

    write = export._write

    def write_then_signal(cm, folder):
        write(cm, folder)
        assert any(folder.iterdir())
        os.kill(os.getpid(), sig)

    monkeypatch.setattr(export, "_write", write_then_signal)
    code, out, err = run_cli(["lora", "tiny-gpt2", "--layers", "0", "--random-weights", "--out", str(tmp_path / "out")],
                             capsys)
    assert code == status and err.strip() == message and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the CLI put the handlers back


def _maps_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return True  # the process is gone: let the assertions below say why


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch being imported")
def test_ctrl_c_while_the_cli_is_still_importing(tmp_path):
    p = subprocess.Popen([GS, "lora", "tiny-gpt2", "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert _wait_for(lambda: _maps_torch(p.pid))  # torch's library is loading: the CLI is still importing
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130 and err.strip() == "error: interrupted; nothing was left half-written." and out == ""
    assert list(tmp_path.iterdir()) == []


def test_stdout_closed_early_is_one_line(tmp_path):
    """`graphsurgeon lora … | head -1` where head is gone before the output is: no BrokenPipeError traceback."""
    p = subprocess.Popen([GS, "lora", "tiny-gpt2", "--layers", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=_env())
    p.stdout.close()  # the reader went away before the first line
    err = p.stderr.read()
    p.wait(timeout=60)
    assert p.returncode == 2 and err.strip() == ("error: the output was closed before graphsurgeon finished writing it "
                                                 "(broken pipe); the rest was dropped.")
