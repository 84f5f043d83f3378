"""Bad input, round two (issue 15): outputs that cannot be written, signals, Ctrl-C while importing, a closed
stdout. One line, the exit status, nothing left behind; signals, broken pipes and Ctrl-C while importing run in a
real process, the rest in-process.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bad_input_helpers import files_under, gpt2_folder, one_line, run_cli  # noqa: F401 (gpt2_folder: a fixture)
from graphsurgeon.cli import main

GS = str(Path(sys.executable).with_name("graphsurgeon"))


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
    def slow_write(cm, folder, *final):  # the files are written, the folder is not yet renamed: stop it here
        write(cm, folder, *final)
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

    def write_then_signal(cm, folder, *final):
        write(cm, folder, *final)
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
