"""A local folder's module tree is known from its config without torch: a preset's shipped tree (at the folder's
depth when only the layer count differs), or the cached one."""

import json
import subprocess
import sys

import pytest

from graphsurgeon.capture import build_model
from graphsurgeon.capture.module_trees import CACHED, RESIZED, SHIPPED, known_tree, remember_tree
from graphsurgeon.capture.presets import load_preset
from graphsurgeon.graph.module_tree import module_tree_data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "cache"))


def _folder(tmp_path, name, config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_a_folder_with_a_presets_config_has_the_tree_its_model_builds(tmp_path):
    config = {**load_preset("tiny-bert").config, "transformers_version": "5.25.0", "dtype": "float32"}
    folder = _folder(tmp_path, "saved-bert", config)
    assert known_tree(folder) == (module_tree_data(build_model(folder, meta=True), folder), SHIPPED)


def test_another_config_is_unknown_until_its_tree_was_derived_once(tmp_path):
    other = {**load_preset("tiny-bert").config, "intermediate_size": 96}  # not a preset's but for the depth
    folder = _folder(tmp_path, "bert-3", {**other, "num_hidden_layers": 3})
    assert known_tree(folder) is None
    tree = module_tree_data(build_model(folder, meta=True), folder)
    assert remember_tree(folder, tree) is not None
    twin = _folder(tmp_path, "bert-3-copy", {**other, "num_hidden_layers": 3})
    assert known_tree(twin) == ({**tree, "source_name": twin}, CACHED)  # by the config, not the path
    assert known_tree(_folder(tmp_path, "bert-4", {**other, "num_hidden_layers": 4})) is None
    assert remember_tree("tiny-bert", tree) is None  # presets ship theirs


@pytest.mark.parametrize("preset,field,layers", [("gpt2", "n_layer", 6), ("gpt2", "n_layer", 14),
                                                  ("tiny-bert", "num_hidden_layers", 3)])
def test_a_presets_config_at_another_depth_has_the_tree_its_model_builds(tmp_path, preset, field, layers):
    folder = _folder(tmp_path, f"{preset}-{layers}", {**load_preset(preset).config, field: layers,
                                                      "transformers_version": "5.25.0"})
    assert known_tree(folder) == (module_tree_data(build_model(folder, meta=True), folder), RESIZED)


def test_knowing_a_folders_tree_imports_no_torch(tmp_path):
    folder = _folder(tmp_path, "saved-gpt2", load_preset("gpt2").config)
    deeper = _folder(tmp_path, "gpt2-6", {**load_preset("gpt2").config, "n_layer": 6})
    code = (f"import sys; from graphsurgeon.capture.module_trees import known_tree; t = known_tree({folder!r}); "
            f"d = known_tree({deeper!r}); print(t[1] == {SHIPPED!r}, d[1] == {RESIZED!r}, 'torch' in sys.modules, "
            "'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True", "False", "False"], out.stderr
