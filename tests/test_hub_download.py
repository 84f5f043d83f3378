"""Hub ids not in the cache download with the real huggingface_hub client from a Hub served on 127.0.0.1."""

import os
import subprocess
import sys

import pytest
from hub_server import FakeHub, tiny_repo

from graphsurgeon.capture.hub import cached_snapshot, download
from graphsurgeon.errors import SourceError

REPO = "tiny-org/tiny-gpt2"
WANTED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny_repo(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def online(monkeypatch):
    """The client's own offline switch off in this process (conftest sets HF_HUB_OFFLINE=1 for everything else)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _cache_files(cache):
    """The cache's files, but huggingface_hub's CACHEDIR.TAG (its marker for backup tools, not a download)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != "CACHEDIR.TAG")


def test_download_fetches_config_safetensors_and_tokenizer_only(files, tmp_path, online, capfd):
    cache = tmp_path / "hub"
    with FakeHub({REPO: files}) as hub:
        assert cached_snapshot(REPO, cache) is None and hub.requests == []  # the cache lookup asks nothing
        folder = download(REPO, endpoint=hub.url, cache_dir=cache)
        assert hub.files_fetched() == WANTED  # never pytorch_model.bin, README.md or onnx/
        assert ("GET", f"/api/models/{REPO}/revision/main") in hub.requests
        assert ("HEAD", f"/{REPO}/resolve/{'0123456789abcdef' * 2 + '01234567'}/model.safetensors") in hub.requests
        assert {p.name for p in folder.iterdir()} == WANTED
        assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
        seen = len(hub.requests)
        assert cached_snapshot(REPO, cache) == folder  # a second open: from the cache, no request
        assert len(hub.requests) == seen
    err = capfd.readouterr().err
    assert f"downloading {REPO} (weights)" in err and "100%" in err  # the progress bar, on stderr


def test_missing_and_gated_repos_are_one_sentence(files, tmp_path, online):
    with FakeHub({REPO: files}, gated={"meta-llama/Gated-7B"}) as hub:
        with pytest.raises(SourceError, match=r"no model of that name is on the Hub .* check the spelling"):
            download("tiny-org/no-such-model", endpoint=hub.url, cache_dir=tmp_path)
        with pytest.raises(SourceError, match=r"meta-llama/Gated-7B is a gated repository: accept its conditions"):
            download("meta-llama/Gated-7B", endpoint=hub.url, cache_dir=tmp_path)
    assert _cache_files(tmp_path) == []


def test_pickle_only_repo_is_refused_without_fetching_the_pickle(files, tmp_path, online):
    pickled = {"config.json": files["config.json"], "pytorch_model.bin": b"pickle"}
    with FakeHub({"old-org/pickled": pickled}) as hub:
        with pytest.raises(SourceError, match=r"old-org/pickled on the Hub holds only pickle weights \(pytorch_model"):
            download("old-org/pickled", endpoint=hub.url, cache_dir=tmp_path)
        assert hub.files_fetched() == {"config.json"}
    assert _cache_files(tmp_path) == []


def test_no_network_is_one_sentence(tmp_path, online):
    hub = FakeHub({})
    url = hub.url
    hub.stop()  # nothing listens on that port any more
    with pytest.raises(SourceError, match=r"cannot reach the Hugging Face Hub \(http://127\.0\.0\.1:\d+\) to download"):
        download(REPO, endpoint=url, cache_dir=tmp_path)
    assert _cache_files(tmp_path) == []


def test_server_going_away_mid_download_leaves_nothing(files, tmp_path, online):
    cache = tmp_path / "hub"
    with FakeHub({REPO: files}, break_weights=True) as hub:
        with pytest.raises(SourceError, match=rf"the download of {REPO} from .* broke off .*nothing partial was kept"):
            download(REPO, endpoint=hub.url, cache_dir=cache, progress=False)
        assert "model.safetensors" in hub.files_fetched()
    assert _cache_files(cache) == []
    assert cached_snapshot(REPO, cache) is None


def test_offline_setting_forbids_the_download(tmp_path):
    with pytest.raises(SourceError, match="HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE"):
        download(REPO, endpoint="http://127.0.0.1:9", cache_dir=tmp_path)


def test_command_line_downloads_then_opens_from_the_cache(files, tmp_path):
    """The real CLI in a new process, HF_ENDPOINT and HF_HOME set as a user sets them; the second run asks nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.getcwd())
    run = [sys.executable, "-m", "graphsurgeon", "inspect", REPO, "--meta", "--tree", "--depth", "1"]
    with FakeHub({REPO: files}) as hub:
        env["HF_ENDPOINT"] = hub.url
        first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        assert "GPT2LMHeadModel" in first.stdout and f"downloading {REPO}" in first.stderr
        assert hub.files_fetched() == WANTED
        seen = len(hub.requests)
        again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and again.stdout == first.stdout
        assert len(hub.requests) == seen and "downloading" not in again.stderr  # opened from the cache, no request


def test_the_view_cache_key_never_downloads(monkeypatch):
    """The editor computes the view cache's key on its UI thread: an uncached hub id is a miss there, not a download."""
    from graphsurgeon.capture import hub
    from graphsurgeon.capture.sources import resolve
    from graphsurgeon.capture.view_cache import cache_key

    monkeypatch.setattr(hub, "download", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(SourceError, match="tiny-org/never-cached is not in the local Hugging Face cache"):
        resolve("tiny-org/never-cached", download=False)
    assert cache_key("tiny-org/never-cached", meta=True) is None


def test_a_cached_hub_id_paints_its_remembered_module_tree(files, tmp_path, online, monkeypatch):
    from huggingface_hub import constants

    from graphsurgeon.capture import build_model
    from graphsurgeon.capture.module_trees import CACHED, known_tree, remember_tree
    from graphsurgeon.graph.module_tree import module_tree_data

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path / "graphsurgeon"))
    with FakeHub({REPO: files}) as hub:
        folder = download(REPO, endpoint=hub.url, progress=False)
    assert known_tree(REPO) is None  # no preset has its config, and it never opened
    tree = module_tree_data(build_model(str(folder), meta=True), REPO)
    assert remember_tree(REPO, tree) is not None and known_tree(REPO) == (tree, CACHED)
