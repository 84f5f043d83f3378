"""Can Qt open a window here? Checked before Qt is asked, so a missing system library is one sentence, not
Qt's abort ("Could not load the Qt platform plugin "xcb" … This application failed to start", core dumped).

Standard library only: `make run` runs this file with the system Python before the environment exists
(`python3 graphsurgeon/ui/platform_check.py --before-setup ARGS`), and `graphsurgeon edit` calls
`window_problem()` before it imports Qt. On Linux with X11 the xcb platform plugin needs a display and a few
libraries that a minimal Debian/Ubuntu lacks; macOS and Windows need none, and other platforms
(QT_QPA_PLATFORM=offscreen, wayland) are trusted.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

# What Qt 6's xcb plugin (libqxcb.so and libQt6XcbQpa.so) links that a minimal system may lack; checked by name
# before PySide6 is installed. Once it is, `ldd` on the plugin itself is the authority.
XCB_LIBRARIES = (
    "libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0", "libxcb-render-util.so.0",
    "libxcb-shape.so.0", "libxcb-randr.so.0", "libxcb-xkb.so.1", "libxkbcommon-x11.so.0", "libxkbcommon.so.0",
    "libX11-xcb.so.1", "libGL.so.1", "libEGL.so.1", "libfontconfig.so.1", "libdbus-1.so.3", "libglib-2.0.so.0",
)
# sonames whose Debian package is not named by the usual rule (libfoo.so.N -> libfooN, libfoo-1.so.N -> libfoo-1-N)
DEBIAN_PACKAGES = {"libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0",
                   "libstdc++.so.6": "libstdc++6"}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.M)


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a library: libxcb-icccm.so.4 -> libxcb-icccm4."""
    if soname in DEBIAN_PACKAGES:
        return DEBIAN_PACKAGES[soname]
    name, _, version = soname.partition(".so.")
    version = version.split(".")[0]
    return (name + ("-" if name[-1:].isdigit() else "") + version).lower()


def missing_libraries(plugin: Path, env: dict | None = None) -> list[str]:
    """The sonames the dynamic loader cannot find for `plugin` (its dependencies included), in ldd's order."""
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, env=env, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # no ldd: nothing to say before Qt tries
    return list(dict.fromkeys(_NOT_FOUND.findall(out)))


def missing_from_cache(names=XCB_LIBRARIES) -> list[str]:
    """The libraries of `names` the loader's cache (`ldconfig -p`) and LD_LIBRARY_PATH do not have."""
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        try:
            cache = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return []
    extra = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    return [n for n in names if f"{n} " not in cache and not any((d / n).exists() for d in extra)]


def xcb_plugin() -> Path | None:
    """PySide6's xcb platform plugin, found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.exists() else None


def sentence(missing: list[str]) -> str:
    """One sentence naming the missing libraries and the command that installs them."""
    packages = " ".join(dict.fromkeys(debian_package(m) for m in missing))
    return (f"the editor cannot open a window: Qt's X11 (xcb) platform plugin needs system libraries that are "
            f"missing ({', '.join(missing)}); on Debian/Ubuntu install them with `sudo apt-get install {packages}`, "
            f"or run headless with QT_QPA_PLATFORM=offscreen.")


def _uses_xcb(env) -> bool:
    if not sys.platform.startswith("linux"):
        return False  # macOS and Windows: Qt's own platform plugins need no system packages
    platform = env.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(":")[0] == "xcb"
    return not (env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY"))  # a Wayland-only session uses wayland


def window_problem(env=None, plugin: Path | None = None) -> str | None:
    """Why Qt could not open a window here (one sentence), or None when nothing is known to be missing."""
    env = os.environ if env is None else env
    if not _uses_xcb(env):
        return None
    if not env.get("DISPLAY"):
        return ("the editor cannot open a window: no display (DISPLAY is not set); run it in a desktop session, "
                "or headless with QT_QPA_PLATFORM=offscreen (`graphsurgeon edit --screenshot FILE.png` renders one).")
    plugin = plugin or xcb_plugin()
    missing = missing_libraries(plugin, dict(env)) if plugin else missing_from_cache()
    return sentence(missing) if missing else None


def _opens_editor(args: list[str]) -> bool:
    """Whether `graphsurgeon ARGS` opens a window (no command, or `edit` without --screenshot / --prepare)."""
    if args and args[0] != "edit" and not args[0].startswith("-"):
        return False
    return not any(a in ("--screenshot", "--prepare", "-h", "--help") or a.startswith("--screenshot=") for a in args)


def main(argv: list[str]) -> int:
    """`--before-setup [ARGS…]`: check the system libraries by name (PySide6 may not be installed yet)."""
    args = argv[1:] if argv[:1] == ["--before-setup"] else argv
    if not _opens_editor(args):
        return 0
    if not _uses_xcb(os.environ):
        return 0
    missing = missing_from_cache()
    if missing:
        print(f"make run: {sentence(missing)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
