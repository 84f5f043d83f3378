"""The environment is the lock, and the editor says why it cannot open a window instead of Qt aborting."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphsurgeon.ui import platform_check

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, str]:
    """name -> version of every requirement of requirements.lock that applies to this Python."""
    from packaging.markers import Marker

    out = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            out[m.group(1)] = m.group(2)
    return out


def test_the_environment_is_the_lock():
    """Every locked requirement is installed at its locked version (torch the CPU build), hashes required."""
    want = locked()
    assert {"torch", "transformers", "peft", "safetensors", "pytest"} <= set(want)
    assert want["torch"].endswith("+cpu")
    wrong = {n: (v, importlib.metadata.version(n)) for n, v in want.items() if importlib.metadata.version(n) != v}
    assert not wrong, f"installed versions differ from requirements.lock (run `make setup` again): {wrong}"
    body = LOCK.read_text(encoding="utf-8")
    assert body.count("--hash=sha256:") >= len(want)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile and "LOCK := requirements.lock" in makefile


def test_tested_transformers_is_in_the_package_range():
    """pyproject.toml's range admits the locked transformers (people who pip install get a tested version)."""
    from packaging.requirements import Requirement

    deps = re.findall(r'"(transformers[^"]*)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert deps and Requirement(deps[0]).specifier.contains(locked()["transformers"])


@pytest.mark.parametrize("soname,package", [
    ("libxcb-cursor.so.0", "libxcb-cursor0"), ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"), ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libX11-xcb.so.1", "libx11-xcb1"), ("libglib-2.0.so.0", "libglib2.0-0"), ("libEGL.so.1", "libegl1"),
])
def test_debian_package_of_a_library(soname, package):
    assert platform_check.debian_package(soname) == package


@pytest.fixture(scope="module")
def fake_plugin(tmp_path_factory) -> tuple[Path, Path]:
    """(a shared library standing for Qt's xcb plugin, the folder holding the one library it needs)."""
    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("needs gcc and ldd to build a stand-in plugin")
    tmp = tmp_path_factory.mktemp("plugin")
    lib = tmp / "lib"
    lib.mkdir()
    (tmp / "dep.c").write_text("int gs_probe_dep(void) { return 1; }\n", encoding="utf-8")
    (tmp / "plugin.c").write_text("int gs_probe_dep(void);\nint gs_plugin(void) { return gs_probe_dep(); }\n",
                                  encoding="utf-8")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libgsprobe-xcb.so.0", "-o", lib / "libgsprobe-xcb.so.0",
                    tmp / "dep.c"], check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp / "libqxcb.so", tmp / "plugin.c", f"-L{lib}",
                    "-l:libgsprobe-xcb.so.0"], check=True)
    return tmp / "libqxcb.so", lib


def test_a_library_path_without_the_plugins_libraries(fake_plugin):
    """The check runs the loader on the plugin: without its library on the path it names it and its package."""
    plugin, lib = fake_plugin
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":0"
    assert platform_check.missing_libraries(plugin, env) == ["libgsprobe-xcb.so.0"]
    problem = platform_check.window_problem(env, plugin)
    assert "libgsprobe-xcb.so.0" in problem and "sudo apt-get install libgsprobe-xcb0" in problem
    found = dict(env, LD_LIBRARY_PATH=str(lib))
    assert platform_check.missing_libraries(plugin, found) == []
    assert platform_check.window_problem(found, plugin) is None


def test_offscreen_and_wayland_are_not_checked(fake_plugin):
    plugin, _ = fake_plugin
    assert platform_check.window_problem({"QT_QPA_PLATFORM": "offscreen"}, plugin) is None
    assert platform_check.window_problem({"WAYLAND_DISPLAY": "wayland-0"}, plugin) is None


def test_the_editor_without_a_display_says_so():
    """`graphsurgeon` with no display: one sentence and exit 2 before Qt is loaded, not Qt's abort."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-m", "graphsurgeon"], env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display (DISPLAY is not set)" in lines[0] and "QT_QPA_PLATFORM=offscreen" in lines[0]


def test_make_run_checks_before_building(tmp_path):
    """`make run`'s first step, with the system Python (no environment yet): only the editor is checked."""
    script = ROOT / "graphsurgeon" / "ui" / "platform_check.py"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    assert subprocess.run([sys.executable, script, "--before-setup"], env=env).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    assert subprocess.run([sys.executable, script, "--before-setup", "inspect", "gpt2"], env=env).returncode == 0
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run: system-check setup$", makefile, re.M)
