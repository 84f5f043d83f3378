"""Hub ids: the local Hugging Face cache first (no request), else a download with huggingface_hub.

Only what graphsurgeon reads is fetched — config.json, generation_config.json, the tokenizer files and the
safetensors weights transformers loads (model.safetensors, or the index and the shards it names); never pickle
(*.bin). `HF_HUB_OFFLINE=1` forbids the download: a hub id then opens only from the cache. A download that fails
leaves nothing of itself in the cache (huggingface_hub keeps only complete files; the ones this attempt added are
removed too), and the failure is one sentence: gated, missing, unreachable, or broken off.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from graphsurgeon.errors import SourceError

SMALL_FILES = [  # fetched first; then the weights the index (or the repo's file list) names
    "config.json", "generation_config.json", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja",
    "chat_template.json",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def cached_snapshot(hub_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot folder of a hub id in the local cache, looked up with no request; None when it is not complete there.

    Complete: the small files the cache's listing of the repo has, and the weights wanted (see `wanted_weights`).
    A repo whose listing has only weights graphsurgeon never loads raises that sentence.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True, allow_patterns=SMALL_FILES,
                                        cache_dir=cache_dir))
    except Exception:  # noqa: BLE001 - anything but a hit means "not cached"
        return None
    names = wanted_weights(hub_id, folder, _cached_listing(hub_id, cache_dir))
    return folder if all((folder / n).is_file() for n in names) else None


def wanted_weights(hub_id: str, folder: Path, listing: set[str] | None) -> list[str]:
    """The weight files transformers loads: the shards the index names, else model.safetensors when the repo has it.

    `listing`: the repo's files (None: unknown, a snapshot another tool wrote). A repo with weights but none of these
    (pickle only, or another safetensors layout) raises one sentence: graphsurgeon cannot load them.
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SourceError(f"{hub_id}: {index.name} on the Hub is not a safetensors index (no weight_map); the "
                              "repository's weights cannot be loaded.") from None
    if listing is None or "model.safetensors" in listing:
        return ["model.safetensors"] if listing is not None or (folder / "model.safetensors").exists() else []
    pickles = sorted(p for p in listing if "/" not in p and p.endswith(PICKLE_SUFFIXES))
    others = sorted(p for p in listing if "/" not in p and p.endswith(".safetensors"))
    if pickles and not others:
        raise SourceError(f"{hub_id} on the Hub holds only pickle weights ({', '.join(pickles[:2])}), which "
                          "graphsurgeon never loads; use a repository with model.safetensors, or convert them "
                          "(save_pretrained(..., safe_serialization=True)) and open that folder.")
    if others:
        raise SourceError(f"{hub_id} on the Hub has {', '.join(others[:2])} but no model.safetensors (or "
                          "model.safetensors.index.json), the files transformers loads; open a repository saved with "
                          "save_pretrained.")
    return []  # a config without weights: it opens with random weights, as such a folder does


def download(hub_id: str, *, endpoint: str | None = None, cache_dir: str | Path | None = None,
             progress: bool = True) -> Path:
    """Download what graphsurgeon needs of `hub_id` into the cache and return its snapshot folder.

    endpoint / cache_dir: huggingface_hub's (HF_ENDPOINT, HF_HOME) when None. A progress bar on stderr unless
    progress=False. Raises one sentence (SourceError) for an offline setting, a gated, missing or private repo,
    a Hub that cannot be reached or a download that broke off; nothing this attempt wrote stays in the cache.
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    where = (endpoint or constants.ENDPOINT).rstrip("/")
    if constants.HF_HUB_OFFLINE:
        raise SourceError(f"{hub_id!r} is not a preset, not a folder, and not in the local Hugging Face cache, and "
                          "HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE to download it, or pass a "
                          "folder written by save_pretrained.")
    cache = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
    try:
        folder_name = repo_folder_name(repo_id=hub_id, repo_type="model")
    except Exception:  # noqa: BLE001
        folder_name = ""
    mine = [cache / folder_name, cache / ".locks" / folder_name] if folder_name else []
    before = {d: _files_under(d) for d in mine}
    try:
        folder = _fetch(hub_id, SMALL_FILES, where, cache_dir, progress, "config and tokenizer")
        weights = wanted_weights(hub_id, folder, _cached_listing(hub_id, cache_dir))
        if weights:
            _fetch(hub_id, weights, where, cache_dir, progress, "weights")
        return folder
    except BaseException as err:
        listed = bool(mine) and bool(_files_under(mine[0]) - before[mine[0]])  # the Hub answered the listing
        for d in mine:
            _remove_new(d, before[d])
        if isinstance(err, SourceError) or not isinstance(err, Exception):
            raise
        sentence = _sentence(hub_id, err, where, cache, listed or _listed(err))
        if sentence is None:
            raise
        raise SourceError(sentence) from err


def _fetch(hub_id: str, patterns: list[str], endpoint: str, cache_dir, progress: bool, what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import logging as hub_logging

    bar = type("Bar", (_bar_class(),), {"label": f"downloading {hub_id} ({what})", "show": progress, "opened": []})
    level = hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()  # its retry warnings are not ours to print: the outcome is one sentence
    try:
        return Path(snapshot_download(hub_id, allow_patterns=patterns, endpoint=endpoint, cache_dir=cache_dir,
                                      tqdm_class=bar))
    finally:
        hub_logging.set_verbosity(level)
        for shown in bar.opened:  # huggingface_hub leaves it open: its final state, and the line ends
            shown.close()


def _cached_listing(hub_id: str, cache_dir) -> set[str] | None:
    """The repo's files as the cache recorded them at the last download (None: not recorded)."""
    from huggingface_hub import get_cached_repo_tree

    try:
        return {f.path for f in get_cached_repo_tree(hub_id, cache_dir=cache_dir)}
    except Exception:  # noqa: BLE001 - no listing cached (a snapshot written by another tool or an older client)
        return None


def _sentence(hub_id: str, err: Exception, endpoint: str, cache: Path, started: bool) -> str | None:
    """One sentence for a failed download (None: not a download failure; the caller re-raises it)."""
    from huggingface_hub import errors as hub_errors

    try:  # huggingface_hub's HTTP client (a connection refused or broken off is its TransportError)
        from httpx2 import TransportError
    except ImportError:
        TransportError = OSError

    chain = _chain(err)
    find = lambda *kinds: next((e for e in chain if isinstance(e, kinds)), None)
    url = f"{endpoint}/{hub_id}"
    if find(hub_errors.GatedRepoError):
        return (f"{hub_id} is a gated repository: accept its conditions on {url} and log in (`hf auth login`, or "
                "set HF_TOKEN), then run again.")
    if find(hub_errors.RepositoryNotFoundError):
        from graphsurgeon.capture.presets import preset_names

        return (f"{hub_id!r} is not a preset, not a folder, and no model of that name is on the Hub ({endpoint}) — "
                "or it is private: check the spelling, or log in (`hf auth login`) if it is yours. Presets: "
                f"{', '.join(preset_names())}.")
    if find(hub_errors.HFValidationError):
        return (f"{hub_id!r} is not a preset, not a folder, and not a Hugging Face model id (org/name); give one of "
                "those.")
    if find(OSError, TransportError) is None:  # not the network, the Hub or the disk: a bug, said as one
        return None
    denied = find(hub_errors.HfHubHTTPError)
    status = getattr(getattr(denied, "response", None), "status_code", None)
    if status in (401, 403):
        return f"the Hub refused {hub_id} (HTTP {status}); log in with access to {url} (`hf auth login`), then run again."
    disk = find(OSError)
    if disk is not None and getattr(disk, "errno", None) == 28:
        return f"the disk holding the Hugging Face cache ({cache}) is full; free space or point HF_HOME elsewhere."
    if started:
        return (f"the download of {hub_id} from {endpoint} broke off ({_reason(chain)}); nothing partial was kept in "
                "the cache — run again to download it.")
    if status is not None and status >= 500:
        return f"the Hub ({endpoint}) answered HTTP {status} for {hub_id}; try again later."
    return (f"cannot reach the Hugging Face Hub ({endpoint}) to download {hub_id} ({_reason(chain)}), and it is not "
            "in the local cache; check the network connection (or HF_ENDPOINT / the proxy settings) and run again.")


def _listed(err: BaseException) -> bool:
    """True when the failure came after the Hub answered (a file's transfer, not the first request)."""
    return any("Consistency check failed" in str(e) for e in _chain(err))


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _reason(chain: list[BaseException]) -> str:
    """The innermost cause in a few words: the exception's class and first line."""
    inner = chain[-1]
    text = str(inner).strip().splitlines()
    first = text[0][:120].rstrip(".") if text else ""
    return f"{type(inner).__name__}: {first}" if first else type(inner).__name__


def _files_under(folder: Path) -> set[str]:
    """Every file and link under `folder` (links not followed), relative paths."""
    found: set[str] = set()
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def _remove_new(folder: Path, before: set[str]) -> None:
    """Remove what appeared under `folder` since `before` was taken, then the folders left empty."""
    for rel in sorted(_files_under(folder) - before):
        try:
            os.unlink(folder / rel)
        except OSError:
            pass
    for root, dirs, _ in sorted(os.walk(folder, topdown=False), key=lambda w: -len(w[0])):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))  # only when empty
            except OSError:
                pass
    if not before:
        try:
            folder.rmdir()
        except OSError:
            pass


@functools.cache
def _bar_class():
    """huggingface_hub's bar of bytes written, on stderr and named after the download; its other bars stay hidden.

    Built on first use so that importing this module does not import tqdm. A vanilla tqdm subclass, so
    huggingface_hub's HF_HUB_DISABLE_PROGRESS_BARS (which the command line sets for transformers) does not hide it.
    """
    from tqdm import tqdm

    class Bar(tqdm):
        label = "downloading"  # set per download
        show = True  # False: no bar at all
        opened: list = []  # the shown bar, closed when the download ends

        def __init__(self, *args, **kwargs):
            shown = self.show and str(kwargs.get("desc", "")).startswith("Reconstructing")
            if shown:
                kwargs.update(desc=self.label, bar_format=None)
            kwargs.update(file=sys.stderr, disable=not shown, dynamic_ncols=True)
            super().__init__(*args, **kwargs)
            if shown:
                self.opened.append(self)

        def set_description(self, desc=None, refresh=True):
            """Keep the label ("Reconstruction complete" is huggingface_hub's word, not ours)."""

        def set_description_str(self, desc=None, refresh=True):
            """As set_description."""

    return Bar
