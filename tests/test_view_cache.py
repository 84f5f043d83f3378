"""View snapshots and their cache: what the editor paints while a capture runs must equal the live views."""

import json

import pytest

from graphsurgeon.capture import capture
from graphsurgeon.capture.view_cache import cache_dir, cache_key, load_views, store_views
from graphsurgeon.errors import ViewError
from graphsurgeon.graph.snapshot import ViewSnapshot, search_entries, take_snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path))
    return tmp_path / "views"


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_bert"])
def test_snapshot_through_json_equals_every_live_view(name, request):
    cm = request.getfixturevalue(name)
    bg = cm.blocks()
    snap = ViewSnapshot(json.loads(json.dumps(take_snapshot(cm))))
    assert snap.paths() == bg.paths() and snap.model_class == cm.model_class
    for path in bg.paths():
        assert snap.view(path) == bg.view(path), path
        assert snap.breadcrumbs(path) == bg.breadcrumbs(path)
        assert snap.parent(path) == bg.parent(path)
    assert search_entries(snap) == search_entries(bg)
    with pytest.raises(ViewError, match="attn"):
        snap.view("transformer.h.0.atn" if name == "tiny_gpt2" else "encoder.layer.0.attn")


def test_store_load_roundtrip_and_misses(cache, tiny_gpt2):
    key = cache_key("tiny-gpt2", meta=False)
    assert load_views(key) is None  # nothing cached yet
    file = store_views(key, take_snapshot(tiny_gpt2))
    assert file.parent == cache_dir() == cache and not list(cache.glob(".views-*"))  # no temp file left
    assert load_views(key).view("transformer.h.0.attn") == tiny_gpt2.blocks().view("transformer.h.0.attn")
    file.write_text(file.read_text()[:1000])  # truncated: a miss, never an error
    assert load_views(key) is None
    file.write_text(json.dumps({"format": 999}))
    assert load_views(key) is None
    file.write_text("[1, 2]")
    assert load_views(key) is None


def test_key_follows_what_the_views_depend_on(tmp_path):
    base = cache_key("tiny-gpt2", meta=True)
    assert base == cache_key("tiny-gpt2", meta=True)
    assert len({base, cache_key("tiny-gpt2", meta=False), cache_key("tiny-gpt2", meta=True, eager_attention=True),
                cache_key("tiny-bert", meta=True)}) == 4
    folder = tmp_path / "m"
    folder.mkdir()
    from graphsurgeon.capture.presets import load_preset

    cfg = dict(load_preset("tiny-gpt2").config)
    (folder / "config.json").write_text(json.dumps(cfg))
    k1 = cache_key(str(folder), meta=True)
    cfg["n_layer"] = cfg["n_layer"] + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    assert k1 is not None and cache_key(str(folder), meta=True) != k1
    assert cache_key(str(tmp_path / "missing"), meta=True) is None  # the capture reports the error itself
    import torch

    assert cache_key(torch.nn.Linear(2, 2), meta=False) is None


def test_unwritable_cache_costs_nothing(tmp_path, monkeypatch, tiny_gpt2):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(blocker / "cache"))
    assert store_views("k", take_snapshot(tiny_gpt2)) is None
