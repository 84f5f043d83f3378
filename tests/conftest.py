"""Shared test set-up: offscreen Qt, offline Hugging Face, and tiny captured models built once per session."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRAPHSURGEON_STRICT", "1")  # the semantic layer re-raises instead of falling back
# torch on one thread, here and in every process a test starts (train.py, the self-check's runner, the editor), as
# torchrun and the self-check's runner already set it: on the tiny models two threads only spin against each other
# (a 20-step train.py: 3.5 CPU s on one thread, 9-10 on two) and against the other processes of a busy machine
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faulthandler  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

# the editor's view cache and autosaves go to a folder of this run, never the user's ~/.cache
os.environ["GRAPHSURGEON_CACHE_DIR"] = tempfile.mkdtemp(prefix="graphsurgeon-test-cache-")


@pytest.fixture(scope="session")
def tiny_gpt2():
    """tiny-gpt2 for the session, read only: a test that edits takes its own copy (`shared_captures.captured`)."""
    from shared_captures import captured

    return captured("tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bert():
    """tiny-bert for the session, read only (as tiny_gpt2)."""
    from shared_captures import captured

    return captured("tiny-bert")


@pytest.fixture(scope="session")
def qv_export(tmp_path_factory):
    """arch -> (capture, folder): the tiny model (surgery_models) with LoRA r=4 on q and v (PEFT's init, B = 0),
    exported once per session (test_export, test_train_script). Tests read it; one that writes into an export
    (train.py's runs/, a tokenizer) works on a copy (`own_copy`)."""
    from surgery_models import fresh

    from graphsurgeon.export import export_folder
    from graphsurgeon.surgery import LoRAConfig, add_lora

    made: dict[str, tuple] = {}

    def get(arch: str) -> tuple:
        if arch not in made:
            cm = fresh(arch)
            add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
            out = tmp_path_factory.mktemp(f"{arch}_qv") / "out"
            export_folder(cm, out)
            made[arch] = cm, out
        return made[arch]
    return get


@pytest.fixture(scope="session")
def plain_export(tmp_path_factory):
    """arch -> (capture, folder): the tiny model (surgery_models) exported without a LoRA, once per session
    (test_export, test_codegen). Read only: a test that writes works on a copy."""
    from surgery_models import fresh

    from graphsurgeon.export import export_folder

    made: dict[str, tuple] = {}

    def get(arch: str) -> tuple:
        if arch not in made:
            cm = fresh(arch)
            out = tmp_path_factory.mktemp(f"{arch}_plain") / "out"
            export_folder(cm, out)
            made[arch] = cm, out
        return made[arch]
    return get


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """A crash dumps the thread that crashed only, so the end of a CI log names the test (all threads push it out)."""
    if faulthandler.is_enabled():  # on a copy of the real stderr, as pytest's own: tests capture fd 2
        config.crash_fd = os.dup(sys.stderr.fileno())
        faulthandler.enable(file=config.crash_fd, all_threads=False)


def pytest_runtest_logstart(nodeid, location):
    """The test now running, in the file `make test` names when pytest dies of a signal (a crash prints no name)."""
    path = os.environ.get("GRAPHSURGEON_LAST_TEST")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(nodeid)


@pytest.fixture(autouse=True)
def each_test_ends_its_workers_and_windows():
    """The editor's workers (open, export, view cache) end within their test, and its closed windows are deleted: a
    worker left running would go on beside the next test (two torch.export at once), a window's timers would fire
    into it."""
    yield
    for thread in threading.enumerate():
        if not thread.name.startswith("graphsurgeon "):  # a library's own (tqdm's monitor) lives on by design
            continue
        thread.join(120)
        assert not thread.is_alive(), f"the thread {thread.name!r} this test started still runs 120 s after it"
    if "graphsurgeon.ui.ui_gc" in sys.modules:  # a window turned automatic collection off: collect what is due here
        sys.modules["graphsurgeon.ui.ui_gc"].collect_due()
    if "PySide6.QtCore" in sys.modules:  # the windows pytest-qt closed (deleteLater) go now, on this thread: none
        from PySide6.QtCore import QCoreApplication, QEvent  # keeps its timers firing into the next test

        if QCoreApplication.instance() is not None:
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
