"""Bad input, round four (issue 23): exports that cannot race, weights checked by dtype and value, the app's own
files distrusted, an editor that obeys signals, UTF-8 and the umask, sentences naming the real cause. Each case
asserts the one line, the exit status and that nothing else changed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bad_input_helpers import files_under, gpt2_folder, one_line, refused_unchanged, run_cli  # noqa: F401 (gpt2_folder: a fixture)
from graphsurgeon.export import ExportError, export_folder
from graphsurgeon.export.destination import claim
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import fresh  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ["lora", "tiny-gpt2", "--layers", "0", "--rank", "2", "--random-weights"]


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`graphsurgeon ARGS` as a user starts it (a process of its own)."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "graphsurgeon", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def gpt2_cm():
    cm = fresh("gpt2")
    add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=2, alpha=4))
    return cm


# ---- exports cannot race -----------------------------------------------------------------------------------
def test_two_real_exports_to_one_folder_one_wins_one_is_refused(tmp_path):
    """Before: both said "exported to", one export silently lost. Now one writes it, the other is refused in one
    line (the lock is held, the folder appeared meanwhile, or it was already there: whichever interleaving)."""
    out = tmp_path / "out"
    procs = [_cli(*EXPORT, "--out", str(out)) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    (_, won_out, _), = [r for r in results if r[0] == 0]
    (_, lost_out, lost_err), = [r for r in results if r[0] == 2]
    line = one_line(lost_err)
    assert any(s in line for s in (f"another export to {out} is running (process ", f"a folder appeared at {out} "
                                   "while the export was being written (it was not replaced)",
                                   f"{out} exists and is not empty")), line
    assert f"exported to {out}" in won_out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock file, no temp folder
    assert (out / "model.py").is_file() and (out / "surgery.json").is_file()


def test_an_export_while_another_holds_the_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    with claim(out):
        before = files_under(tmp_path)
        code, stdout, err = run_cli([*EXPORT, "--out", str(out)], capsys)
        assert code == 2 and one_line(err) == (f"error: another export to {out} is running (process {os.getpid()}); "
                                               "wait for it to finish or choose another folder.")
        assert files_under(tmp_path) == before
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the lock


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_a_folder_that_appears_meanwhile_is_never_replaced(force, gpt2_cm, tmp_path, monkeypatch):
    import graphsurgeon.export as export

    out = tmp_path / "out"
    if force:
        export_folder(gpt2_cm, out)
    write = export._write

    def users_folder_appears(cm, folder, *final):  # the user's own folder made while the export is being written
        write(cm, folder, *final)
        if force:
            out.rename(tmp_path / "earlier")
        out.mkdir()
        (out / "mine.txt").write_text("the user's")

    monkeypatch.setattr(export, "_write", users_folder_appears)
    with pytest.raises(ExportError) as info:
        export_folder(gpt2_cm, out, force=force)
    assert str(info.value) == (f"a folder appeared at {out} while the export was being written (it was not replaced); "
                               "move it away or choose another folder.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "out"][not force:]
    assert files_under(out) == {"mine.txt": b"the user's"}


def test_a_killed_export_leaves_nothing_the_next_one_does_not_remove(tmp_path, capsys):
    """A real export process SIGKILLed mid-write; the next export (the same command, run in this process: it needs no
    process of its own) removes what it left and says so."""
    out = tmp_path / "out"
    proc = _cli(*EXPORT, "--out", str(out))
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".out.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # mid-export: no handler runs
    proc.wait(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.partial-"))
    assert len(left) == 1 and not out.exists(), sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run_cli([*EXPORT, "--out", str(out)], capsys)
    assert code == 0 and f"note: removed {left[0]} beside {out}, left by an export that was stopped." in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_earlier_export_set_aside_by_a_kill_is_put_back(gpt2_cm, tmp_path):
    """Killed between --force's two renames, the earlier export sits in .out.replaced-*: the next export puts it
    back, and refuses to replace it without --force."""
    out = tmp_path / "out"
    export_folder(gpt2_cm, out)
    out.rename(tmp_path / ".out.replaced-k1ll3d_x")
    before = files_under(tmp_path / ".out.replaced-k1ll3d_x")
    with pytest.raises(ExportError, match=f"{out} exists and is not empty; choose another folder or pass --force"):
        export_folder(gpt2_cm, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and files_under(out) == before


def test_exports_follow_the_umask(gpt2_cm, tmp_path):
    """Before: the folder was 0700 and the weight files 0600 whatever the umask (a colleague could not read it)."""
    old = os.umask(0o022)
    try:
        export_folder(gpt2_cm, tmp_path / "out")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in out.iterdir()}
    assert set(modes.values()) == {oct(0o644)}, modes


# ---- weights checked by dtype and value --------------------------------------------------------------------
C_ATTN = "transformer.h.0.attn.c_attn.weight"


def _weights(change):
    def edit(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(folder / "model.safetensors")
        change(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return edit


def _nan(t):
    t[C_ATTN] = t[C_ATTN].clone()
    t[C_ATTN][0, :2] = float("nan")
    t[C_ATTN][1, 0] = float("inf")


WEIGHTS = [  # (case, how model.safetensors is broken, what the one line must say)
    ("int32", _weights(lambda t: t.update({C_ATTN: t[C_ATTN].int()})),
     f"store floating-point parameters as integers or booleans ({C_ATTN} is int32 in the file, the model's parameter "
     "is float32), which would load as whole numbers"),
    ("bool", _weights(lambda t: t.update({C_ATTN: t[C_ATTN] > 0})),
     f"({C_ATTN} is bool in the file, the model's parameter is float32)"),
    ("nan_inf", _weights(_nan), f"are not all finite ({C_ATTN} holds 2 NaN and 1 inf), so the model would compute "
                                "NaN; give weights saved before training diverged, or pass --allow-nonfinite"),
]


@pytest.mark.parametrize("name,breaks,message", WEIGHTS, ids=[c[0] for c in WEIGHTS])
def test_weights_of_the_wrong_kind_or_value_refused(name, breaks, message, gpt2_folder, tmp_path, capsys):
    refused_unchanged(gpt2_folder, breaks, message, tmp_path, capsys)


def test_nonfinite_weights_allowed_are_said_on_every_output(gpt2_folder, tmp_path, capsys):
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    _weights(_nan)(folder)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["lora", str(folder), "--layers", "0", "--allow-nonfinite", "--out", str(out)], capsys)
    said = f"WEIGHTS HOLD NaN OR inf ({C_ATTN} holds 2 NaN and 1 inf; kept by --allow-nonfinite)"
    assert code == 0 and said in err and said in stdout
    assert said in (out / "README.md").read_text() and said in json.loads((out / "surgery.json").read_text())["weights"]["note"]


def test_float16_weights_for_a_float32_model_are_noted_and_loaded(gpt2_folder, tmp_path, capsys):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    _weights(lambda t: t.update({C_ATTN: t[C_ATTN].half()}))(folder)
    code, stdout, err = run_cli(["lora", str(folder), "--layers", "0"], capsys)
    assert code == 0 and "1 tensor converted while loading (float16 in the file, float32 in the model)" in stdout, err


def test_the_scan_sums_in_float32_and_counts_only_nan_and_inf():
    """weights_values.nonfinite: NaN / inf found in every float width; finite values whose sum overflows the tensor's
    own width (float16 60000s) or even float32 (1e38s) are counted, not refused; integer tensors are skipped."""
    import torch

    from graphsurgeon.capture.weights_values import nonfinite

    tensors = {"half": torch.full((64, 64), 60000.0).half(), "huge": torch.full((16,), 3e38), "ints": torch.arange(5),
               "bf16": torch.ones(8).bfloat16(), "f32": torch.ones(4, 4), "f16": torch.ones(8).half()}
    tensors["bf16"][3], tensors["f16"][0], tensors["f32"][1, 1] = float("inf"), float("nan"), float("-inf")
    assert nonfinite(tensors.items()) == {"bf16": (0, 1), "f16": (1, 0), "f32": (0, 1)}


# ---- the app's own files are data it distrusts ---------------------------------------------------------------
def _deep(n: int) -> str:
    return '{"a": ' * n + "1" + "}" * n


def _autosave(cm) -> dict:
    from graphsurgeon.surgery.recipe import RECIPE_FORMAT

    step = {"op": "insert", "role": "q", "layer": 0, "module": "transformer.h.0.attn.c_attn",
            "config": LoRAConfig(r=2).as_dict()}
    return {"source": cm.source_name, "meta": False, "eager": False, "model_class": cm.model_class,
            "recipe": {"format": RECIPE_FORMAT, "version": 1, "model_class": cm.model_class, "steps": [step]}}


AUTOSAVES = [  # (case, the file's text from a valid autosave, what the one sentence must say)
    ("wrong_field_type", lambda d: __import__("json").dumps({**d, "meta": "no"}), "(meta is a string, not true or false)"),
    ("recipe_field", lambda d: __import__("json").dumps({**d, "recipe": {**d["recipe"], "steps": [
        {**d["recipe"]["steps"][0], "layer": "zero"}]}}), "layer"),
    ("deep", lambda d: _deep(100000), "(it is nested too deeply to be an autosave (more than 17 levels))"),
    ("list", lambda d: "[1]", "(the file is a list, not an object)"),
    ("not_json", lambda d: "{", "(Expecting property name"),
]


@pytest.mark.parametrize("name,text,message", AUTOSAVES, ids=[c[0] for c in AUTOSAVES])
def test_a_broken_autosave_is_an_offer_refused_in_one_sentence(name, text, message, tiny_gpt2, tmp_path, monkeypatch):
    """Before: a wrong field type or deep nesting gave a traceback at start-up (only OSError/ValueError caught)."""
    from graphsurgeon.ui.operate.session import autosave_path, pending_recovery, read_recovery

    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path))
    path = autosave_path(tiny_gpt2)
    path.parent.mkdir(parents=True)
    path.write_text(_valid_first(tiny_gpt2, path, text), encoding="utf-8")
    before = files_under(tmp_path)
    data, problem = read_recovery(tiny_gpt2)
    assert data is None and pending_recovery(tiny_gpt2) is None
    assert problem.startswith(f"the autosave {path} cannot be recovered (") and message in problem, problem
    assert problem.endswith("it is left as it is, delete it to stop this message.") and "\n" not in problem
    assert files_under(tmp_path) == before


def _valid_first(cm, path, text) -> str:
    """The valid autosave is offered (the cases differ from it in one way only); then the broken text."""
    import json

    from graphsurgeon.ui.operate.session import read_recovery

    path.write_text(json.dumps(_autosave(cm)), encoding="utf-8")
    data, problem = read_recovery(cm)
    assert problem is None and data["recipe"]["steps"], problem
    return text(_autosave(cm))


VIEW_CACHES = [  # (case, how a valid cache file's data is changed): each is a miss, never an error
    ("deep", lambda d, raw: raw[:-1] + ', "x": ' + _deep(5000) + "}"),
    ("views_a_list", lambda d, raw: __import__("json").dumps({**d, "views": list(d["views"])})),
    ("root_view_damaged", lambda d, raw: __import__("json").dumps({**d, "views": {**d["views"], "": {"blocks": 3}}})),
    ("children_a_string", lambda d, raw: __import__("json").dumps({**d, "children": "x"})),
    ("not_utf8", lambda d, raw: "\udcff" + raw),
]


@pytest.mark.parametrize("name,change", VIEW_CACHES, ids=[c[0] for c in VIEW_CACHES])
def test_a_broken_view_cache_is_a_miss(name, change, tiny_gpt2, tmp_path, monkeypatch):
    import json

    from graphsurgeon.capture.view_cache import cache_dir, load_views, store_views
    from graphsurgeon.graph.snapshot import take_snapshot

    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(tmp_path))
    path = store_views("k" * 32, take_snapshot(tiny_gpt2))
    assert load_views("k" * 32) is not None
    raw = path.read_text(encoding="utf-8")
    path.write_bytes(change(json.loads(raw), raw).encode("utf-8", "surrogateescape"))
    before = files_under(cache_dir())
    assert load_views("k" * 32) is None and files_under(cache_dir()) == before


def test_a_damaged_inner_view_of_the_cache_is_a_view_error(tiny_gpt2):
    from graphsurgeon.errors import ViewError
    from graphsurgeon.graph.snapshot import ViewSnapshot, take_snapshot

    data = take_snapshot(tiny_gpt2)
    data["views"]["transformer.h.0"] = {"path": "transformer.h.0"}
    with pytest.raises(ViewError, match="the cached view of 'transformer.h.0' is damaged"):
        ViewSnapshot(data).view("transformer.h.0")


def test_a_deeply_nested_config_is_one_sentence(gpt2_folder, tmp_path, capsys):
    """Before: "unexpected RecursionError … a graphsurgeon bug"."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(gpt2_folder, folder)
    cfg = (folder / "config.json").read_text()
    (folder / "config.json").write_text(cfg.rstrip()[:-1] + ', "task_specific_params": ' + _deep(100000) + "}")
    json.loads((folder / "config.json").read_text().replace(_deep(100000), "1"))  # valid but for the nesting
    before = files_under(tmp_path)
    code, out, err = run_cli(["lora", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == "" and one_line(err) == (
        f"error: {folder / 'config.json'} cannot be read: it is nested too deeply to be a config.json (more than 32 "
        "levels); fix or regenerate it with save_pretrained.")
    assert files_under(tmp_path) == before


# ---- the editor obeys signals ----------------------------------------------------------------------------
SIGNALS = {"SIGTERM": (signal.SIGTERM, 143), "SIGINT": (signal.SIGINT, 130), "SIGHUP": (signal.SIGHUP, 129)}


@pytest.fixture(scope="module")
def signalled(tmp_path_factory, tiny_gpt2):
    """Real editor processes (offscreen Qt, tiny preset, a cache folder each), all started at once and each sent its
    signal when it is idle: one per signal (idle once its capture's views are cached), and "recipe", given an edit to
    replay (`--recipe`) and sent SIGTERM once the edit is autosaved. Each runs as it would alone; their start-ups and
    exits overlap instead of following one another. name -> (alive when signalled, exit status, stderr, cache)."""
    import json

    from graphsurgeon.ui.operate.session import autosave_path

    started = {}
    for name in [*SIGNALS, "recipe"]:
        folder = tmp_path_factory.mktemp(f"editor-{name}")
        cache, args = folder / "cache", ["edit", "tiny-gpt2"]
        if name == "recipe":
            (folder / "recipe.json").write_text(json.dumps(_autosave(tiny_gpt2)["recipe"]), encoding="utf-8")
            args += ["--recipe", str(folder / "recipe.json")]
            with pytest.MonkeyPatch.context() as env:
                env.setenv("GRAPHSURGEON_CACHE_DIR", str(cache))
                path = autosave_path(tiny_gpt2)
            ready, settle, signum = path.exists, 0.5, signal.SIGTERM  # the edit is autosaved once the capture is live
        else:  # the capture is done when its views are cached; then the loop waits
            ready, settle, signum = (lambda c=cache: bool(list(c.glob("views/*.json")))), 1.0, SIGNALS[name][0]
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "GRAPHSURGEON_CACHE_DIR": str(cache)}
        started[name] = _cli(*args, env=env), ready, settle, signum, cache
    alive = {}
    try:
        for name, (proc, ready, settle, signum, _) in started.items():
            deadline = time.monotonic() + 300
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(settle)
            alive[name] = proc.poll() is None
            if alive[name]:
                proc.send_signal(signum)
        results = {}
        for name, (proc, *_, cache) in started.items():
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            results[name] = alive[name], code, proc.communicate()[1] if code is not None else "", cache
    finally:
        for proc, *_ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.parametrize("name", list(SIGNALS))
def test_an_idle_editor_obeys_signals(name, signalled):
    """A real editor process (offscreen Qt, tiny preset), idle in Qt's event loop once its capture is cached; before,
    only SIGKILL ended it. The sentence is the editor's own (not the start-up path's "terminated by …")."""
    signum, status = SIGNALS[name]
    alive, code, err, _ = signalled[name]
    assert alive, err
    lines = [line for line in err.splitlines() if "propagateSizeHints" not in line]  # the offscreen plugin's note
    assert code == status and lines == [f"graphsurgeon: {signal.Signals(signum).name}, the editor closed."], err


def test_an_edit_survives_sigterm_in_the_autosave_and_is_offered_next(signalled, tiny_gpt2, monkeypatch):
    """A real editor process given an edit (`--recipe`, replayed once the capture is live), then SIGTERM: exit 143,
    the line says the edits were kept, the autosave on disk holds the recipe's step (a clean close would have removed
    it), and the next start on this model offers it (read_recovery: what the window asks when a model is ready)."""
    import json

    from graphsurgeon.ui.operate.session import autosave_path, read_recovery

    alive, code, err, cache = signalled["recipe"]
    assert alive, err
    monkeypatch.setenv("GRAPHSURGEON_CACHE_DIR", str(cache))
    recipe = _autosave(tiny_gpt2)["recipe"]
    path = autosave_path(tiny_gpt2)
    lines = [line for line in err.splitlines() if "propagateSizeHints" not in line]
    said = "graphsurgeon: SIGTERM, the editor closed (edits kept in the autosave: File → Recover autosaved session)."
    assert code == 143 and lines == [said], err
    kept = json.loads(path.read_text(encoding="utf-8"))
    assert kept["recipe"]["steps"] == recipe["steps"] and kept["source"] == "tiny-gpt2" and kept["meta"] is False
    offered, problem = read_recovery(tiny_gpt2)
    assert problem is None and offered == kept


def test_edit_recipe_that_is_not_a_file_is_refused(tmp_path, capsys):
    code, _, err = run_cli(["edit", "tiny-gpt2", "--recipe", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and one_line(err) == (f"error: --recipe {tmp_path / 'nope.json'} is not a file; give a "
                                           "recipe saved with File → Save recipe… or an export's surgery.json.")


# ---- UTF-8 whatever the locale ----------------------------------------------------------------------------
def test_an_export_under_a_non_utf8_locale(tmp_path):
    """LC_ALL=C without Python's UTF-8 coercion: the locale's encoding is ASCII. Before, the export failed on
    model.py's "×" ("unexpected UnicodeEncodeError"); now every file is UTF-8 and the output escapes what it cannot
    print."""
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env={**os.environ, **env}, capture_output=True, text=True)
    assert probe.stdout.strip() in ("ANSI_X3.4-1968", "US-ASCII", "ascii"), probe.stdout  # the case is real
    out = tmp_path / "out"
    proc = _cli(*EXPORT, "--out", str(out), env=env)
    code, stdout, err = proc.wait(timeout=600), *proc.communicate()
    assert code == 0 and f"exported to {out} \\u2014 RANDOM weights" in stdout, err
    texts = {p.name: p.read_bytes().decode("utf-8") for p in out.iterdir() if p.suffix in (".py", ".json", ".md")}
    assert any(not t.isascii() for t in texts.values())  # the case needs non-ASCII text in the files
    assert "model_class" in texts["surgery.json"] and "def load_model" in texts["model.py"]


# ---- sentences that name the real cause ----------------------------------------------------------------------
def _recipe(tmp_path: Path, **changes) -> str:
    import json

    step = {"op": "insert", "role": "q", "layer": 0, "module": "encoder.layer.0.attention.self.query",
            "config": LoRAConfig(r=2).as_dict()}
    recipe = {"format": "graphsurgeon-recipe", "version": 1, "model_class": "BertModel", "steps": [step]}
    recipe.update(changes.pop("top", {}))
    step.update(changes)
    (tmp_path / "r.json").write_text(json.dumps(recipe), encoding="utf-8")
    return str(tmp_path / "r.json")


def _folder_at_weights(model: Path, tmp_path, monkeypatch):
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").mkdir()
    return [str(model)]


def _pipe_at_weights(model: Path, tmp_path, monkeypatch):
    (model / "model.safetensors").unlink()
    os.mkfifo(model / "model.safetensors")  # reading it would block: it must not be opened
    return [str(model)]


def _unreadable(model: Path, tmp_path, monkeypatch):
    import graphsurgeon.capture.sources as sources

    file = model / "model.safetensors"
    file.chmod(0)
    if os.access(file, os.R_OK):  # root reads anything: the OS error a user gets, raised where the file is opened
        def denied(path):
            raise PermissionError(13, "Permission denied", str(path))
        monkeypatch.setattr(sources, "read_header", denied)
    return [str(model)]


def _too_big(model: Path, tmp_path, monkeypatch):
    import json

    (model / "model.safetensors").unlink()
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "vocab_size": 10**12}))
    return [str(model), "--random-weights"]


def _chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


SENTENCES = [  # (case, how to set it up -> the arguments after `lora`, what the one line must say)
    ("folder_at_weights", _folder_at_weights, "model.safetensors is a folder, not a weights file; save the model "
                                              "again with save_pretrained."),
    ("pipe_at_weights", _pipe_at_weights, "model.safetensors is a named pipe, not a weights file"),
    ("unreadable", _unreadable, "model.safetensors cannot be read: permission denied; give your user read access to "
                                "it (chmod u+r)"),  # before: "is corrupt or truncated"
    ("out_of_memory", _too_big, "the model that config.json describes does not fit in this machine's memory (one of "
                                "its tensors needs"),  # before: "[enforce fail at alloc_cpu.cpp:127]"
    ("rank_too_large", lambda m, t, mp: [str(m), "--rank", "33", "--targets", "q", "--layers", "0"],
     "--rank 33 is not allowed here: rank r = 33 is too large for transformer.h.0.attn.c_attn[0:32] (layer 0, 'q'): "
     "r must be between 1 and min(in 32, out 32) = 32; give --rank 32 or less."),  # before: "getitem: rank r must …"
    ("role_in_capitals", lambda m, t, mp: ["tiny-bert", "--random-weights", "--recipe", _recipe(t, role="Q")],
     "step 1 names the role 'Q', and roles are lower case: write 'q' in the recipe."),
    ("class_with_a_newline", lambda m, t, mp: ["tiny-bert", "--recipe", _recipe(t, top={"model_class": "BertModel\n"})],
     "model_class 'BertModel\\n' has spaces or a line break around the class name; write 'BertModel'"),
    ("preset_with_a_slash", lambda m, t, mp: [str(_chdir(t, mp) and "tiny-gpt2/")],
     "error: tiny-gpt2/: no such folder; for the preset write tiny-gpt2 (without the slash)."),
]


@pytest.mark.parametrize("name,setup,message", SENTENCES, ids=[c[0] for c in SENTENCES])
def test_sentences_name_the_real_cause(name, setup, message, gpt2_folder, tmp_path, monkeypatch, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(gpt2_folder, model)
    argv = setup(model, tmp_path, monkeypatch)
    before = files_under(tmp_path)
    code, out, err = run_cli(["lora", *argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == "" and message in one_line(err), err
    assert files_under(tmp_path) == before
    if "out_of_memory" == name:
        assert "vocab_size = 1000000000000 in config.json, or pass --meta" in err
