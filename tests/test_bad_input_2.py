"""Bad input, round two (issue 15), one table per kind: weights that do not fit their config, random weights,
LoRA hyper-parameters, command-line mistakes. Each case asserts the one-line message, the exit status and that
nothing was written or changed (`main([...])` in-process). Recipes: test_bad_input_2_recipes.py; outputs, signals,
pipes: test_bad_input_2_outputs.py.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from bad_input_helpers import files_under, gpt2_folder, one_line, run_cli  # noqa: F401 (gpt2_folder: a fixture)
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.surgery.spec import LoRAConfig, LoRAConfigError


# ---- weights that do not match their config ------------------------------------------------------------
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
     "is a graphsurgeon export, whose model.safetensors holds the LoRA weights too; open a run's merged folder"),
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
    from shared_captures import captured
    from graphsurgeon.ui.operate.session import EditSession

    cm = captured("tiny-bert")
    s = EditSession(cm)
    s.drop("encoder.layer.0.attention.self", "m:encoder.layer.0.attention.self.query", config=LoRAConfig(r=4))
    code = cm.gm.code
    for change, message in [({"alpha": math.nan}, "alpha = nan is not allowed"),
                            ({"dropout": 1.0}, "dropout = 1.0 is not allowed"), ({"r": 0}, "r = 0 is not allowed")]:
        with pytest.raises(GraphsurgeonError, match=message):
            s.edit("encoder.layer.0.attention.self.lora_q", **change)
    assert cm.gm.code == code and len(s.history.done) == 1


def test_architectures_of_another_type_that_transformers_itself_maps_there():
    """sarvam_mla's config.json names DeepseekV3ForCausalLM (transformers' auto mapping for the type), which is no
    mismatch; a class the mappings never give the type still is."""
    from graphsurgeon.capture.sources import _auto_maps

    assert _auto_maps("sarvam_mla", "DeepseekV3ForCausalLM") and _auto_maps("llama", "LlamaForCausalLM")
    assert not _auto_maps("gpt2", "BertModel")
