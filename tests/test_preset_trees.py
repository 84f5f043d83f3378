"""The module trees shipped with the presets are what the presets build now, and a stale or broken file is never used."""

import json

import pytest

from graphsurgeon.capture import preset_trees
from graphsurgeon.capture.preset_trees import config_digest, derive_tree, shipped_tree, tree_file
from graphsurgeon.capture.presets import is_preset, load_preset, preset_names
from graphsurgeon.graph.snapshot import ViewSnapshot


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_ships_the_tree_it_builds_now(preset):
    """The guard against a silently stale file: regenerate with `make preset-trees` when this fails."""
    shipped = shipped_tree(preset)
    assert shipped is not None, f"{tree_file(preset)} is missing or made for another config: run make preset-trees"
    assert shipped == derive_tree(preset), f"{tree_file(preset)} is stale: run make preset-trees"


def test_the_shipped_gpt2_tree_reads_as_the_module_hierarchy():
    tree = ViewSnapshot(shipped_tree("gpt2"))
    assert tree.modules_only and tree.model_class == "GPT2LMHeadModel"
    assert [b.title for b in tree.view("").blocks] == ["transformer", "lm_head"]
    stack = next(b for b in tree.view("transformer").blocks if b.module_path == "transformer.h")
    assert stack.title == "h.0 … h.11 ×12" and stack.subtitle == "GPT2Block ×12"
    assert {b.title for b in tree.view("transformer.h.0.attn").blocks} == {"c_attn", "c_proj", "attn_dropout",
                                                                          "resid_dropout"}
    assert tree.view("transformer.h.0.attn").blocks[0].param_count == 768 * 3 * 768 + 3 * 768  # c_attn: W and b


@pytest.fixture
def tree_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(preset_trees, "TREE_DIR", tmp_path)
    return tmp_path


def test_generator_writes_what_is_shipped(tree_dir, capsys):
    assert preset_trees.main(["tiny-gpt2"]) == 0
    written = json.loads((tree_dir / "tiny-gpt2.json").read_text())
    assert written["config_sha256"] == config_digest(load_preset("tiny-gpt2").config)
    assert written["tree"] == derive_tree("tiny-gpt2") and "tiny-gpt2: 34 composites" in capsys.readouterr().out
    assert not list(tree_dir.glob(".*"))  # no temp file left behind
    assert preset_trees.main(["no-such-preset"]) == 2
    assert "'no-such-preset' is not a built-in preset; choose from" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["config changed", "other format", "other source", "not json", "no tree"])
def test_a_stale_or_broken_file_is_never_used(tree_dir, damage):
    preset_trees.write_tree("tiny-gpt2")
    assert shipped_tree("tiny-gpt2") is not None
    path = tree_dir / "tiny-gpt2.json"
    data = json.loads(path.read_text())
    if damage == "config changed":  # the preset's config.json was edited after the tree was made
        data["config_sha256"] = config_digest({**load_preset("tiny-gpt2").config, "n_layer": 3})
    elif damage == "other format":
        data["tree"]["format"] = -1
    elif damage == "other source":
        data["tree"]["source_name"] = "tiny-bert"
    elif damage == "no tree":
        del data["tree"]
    path.write_text("{" if damage == "not json" else json.dumps(data))
    assert shipped_tree("tiny-gpt2") is None


def test_only_presets_have_shipped_trees(tree_dir, tmp_path):
    assert shipped_tree(str(tmp_path)) is None and shipped_tree("modules/gpt2") is None
    assert not is_preset("modules/gpt2") and not is_preset("../presets/gpt2") and is_preset("gpt2")
