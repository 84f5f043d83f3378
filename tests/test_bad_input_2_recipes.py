"""Bad input, round two (issue 15): recipes. Every field is checked before anything changes, a recipe made on
another model is refused by name (or mapped by role, loudly), and a step that does not fit names itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_input_helpers import files_under, one_line, run_cli
from graphsurgeon.cli import main
from graphsurgeon.surgery.recipe import RecipeError, check_recipe, load_recipe
from graphsurgeon.surgery.spec import LoRAConfig


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
     "step 1 (insert on role 'q' of layer 0) is refused: linear: rank r = 65 is too large for "
     "encoder.layer.0.attention.self.query (layer 0, 'q'): r must be between 1 and min(in 64, out 64) = 64"),
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


def test_os_error_reading_a_recipe(tmp_path, capsys):
    code, out, err = run_cli(["lora", "tiny-gpt2", "--recipe", str(tmp_path)], capsys)
    assert code == 2 and f"cannot read the recipe {tmp_path}: Is a directory" in one_line(err)
