"""Shared test set-up: offscreen Qt, offline Hugging Face, and tiny captured models built once per session."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRAPHSURGEON_STRICT", "1")  # the semantic layer re-raises instead of falling back

import tempfile  # noqa: E402

import pytest  # noqa: E402

# the editor's view cache and autosaves go to a folder of this run, never the user's ~/.cache
os.environ["GRAPHSURGEON_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphsurgeon-test-cache-")


@pytest.fixture(scope="session")
def tiny_gpt2():
    """tiny-gpt2 captured once per session: copy it (`fresh_capture`) before editing."""
    from graphsurgeon.capture import capture

    return capture("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bert():
    from graphsurgeon.capture import capture

    return capture("tiny-bert")
