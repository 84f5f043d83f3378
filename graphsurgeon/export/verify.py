"""The export's self-check: an export is not done until its model.py has been run against the captured graph.

After the folder is written to its temporary place (export/__init__.py, one `with self_check(cm, tmp)`), the
written model.py is compiled, checked for undefined names (symtable: every name a scope reads that is neither its
own, a closure's, the module's nor a builtin), imported in a fresh process where graphsurgeon is not importable
(verify_runner.py, started while the folder is written), loaded with its own `load_model`, and run on example
inputs at two sequence lengths, with the exported weights (LoRA B = 0 as PEFT starts it) and again with random
non-zero LoRA weights that are not kept. Its outputs must equal the graph's (run here, in process) within the
dtype's tolerance. A mismatch names the first module of model.py whose output differs from the graph's output of
the same module path (nn_module_stack), keeps the written folder under the cache for a bug report, and refuses
the export (SelfCheckError: the CLI exits 2). A model too large to run here is checked on a shrunk twin
(export/twin.py).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import symtable
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from graphsurgeon.cache_dir import cache_root
from graphsurgeon.capture.weights_values import NONFINITE_NOTE
from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.export.codegen.scopes import lora_export_name

RUNNER = Path(__file__).with_name("verify_runner.py")
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}  # atol = rtol
LENGTH_STEP = 3  # the two sequence lengths: the capture's example length - 3 and + 3 (within the captured range)
BATCH = 2  # batch 1 would hide a code generator that mixes up batch and another dim
RUN_TIMEOUT_S = 900  # the fresh process: import torch, load the weights, run four cases


class SelfCheckError(GraphsurgeonError):
    """The written model.py is not the captured model: the export is refused."""


class KVCacheRefused(SelfCheckError):
    """model.py is the captured model, but its KV cache path is not (tokens mix outside the attentions it caches):
    the export writes model.py again without a cache."""


@dataclass
class Check:
    """What the self-check checked, for the export's output line."""

    text: str = ""  # "model.py checked against the graph: 2 lengths, random LoRA, max diff 2e-07"
    max_diff: float = 0.0  # the largest difference over every case and output


@contextlib.contextmanager
def self_check(cm, folder: Path):
    """Check the export written in `folder` inside the `with` block when it ends; raise SelfCheckError if it
    differs. The runner process starts on entry so that importing torch overlaps the writing."""
    from graphsurgeon.export.twin import runs_here

    check = Check()
    here = runs_here(cm)
    runner = _start_runner(folder) if here else None
    try:
        yield check
        static_check(folder)
        if here:
            check.text, check.max_diff = run_check(cm, folder, runner)
            if cm.config and not cm.sizes_literal:  # model.py reads its sizes from config.json: prove it elsewhere
                from graphsurgeon.export.second_config import check_second_config

                check.text += "; " + check_second_config(cm, folder, runner)
        else:
            from graphsurgeon.export.twin import twin_check

            check.text, check.max_diff = twin_check(cm, folder)
    finally:
        if runner is not None:
            runner.close()


def static_check(folder: Path) -> None:
    """model.py compiles and reads no undefined name (SelfCheckError naming the line otherwise)."""
    text = (folder / "model.py").read_text(encoding="utf-8")
    try:
        compile(text, "model.py", "exec")
    except SyntaxError as err:
        refuse(folder, f"model.py does not compile ({err.msg}, line {err.lineno}: {(err.text or '').strip()})")
    missing = undefined_names(text)
    if missing:
        name, line = missing[0]
        refuse(folder, f"model.py reads the undefined name {name!r} (line {line})")


def undefined_names(text: str) -> list[tuple[str, int]]:
    """(name, first line) of every name a scope of `text` reads that nothing defines, in line order."""
    top = symtable.symtable(text, "model.py", "exec")
    known = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    known |= set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__builtins__"}
    missing: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for sym in table.get_symbols():
            global_read = sym.is_referenced() and (table is top or sym.is_global())
            if global_read and sym.get_name() not in known:
                missing.add(sym.get_name())
    if not missing:
        return []
    import ast

    lines = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Name) and node.id in missing:
            lines[node.id] = min(lines.get(node.id, node.lineno), node.lineno)
    return sorted(((n, lines.get(n, 0)) for n in missing), key=lambda x: x[1])


class _Runner:
    """The fresh process that runs model.py (verify_runner.py), and its scratch folder."""

    def __init__(self, folder: Path):
        self.work = Path(tempfile.mkdtemp(prefix="graphsurgeon-check-"))
        self.stderr = open(self.work / "stderr.txt", "w+", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen([sys.executable, "-I", "-B", str(RUNNER), str(folder), str(self.work)], cwd=folder,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True)

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def wait_line(self) -> str:
        """The runner's next stdout line ("" when it ended)."""
        return self.proc.stdout.readline().strip()

    def failure(self) -> str:
        """How model.py failed: " in the module P (Class.forward, line N: `code`): Error: message" — the module
        whose code raised (else model.py's function) and the last line of the traceback."""
        self.proc.wait(timeout=RUN_TIMEOUT_S)
        self.stderr.seek(0)
        lines = [ln.strip() for ln in self.stderr.read().splitlines() if ln.strip()]
        error = f": {lines[-1] if lines else f'exit status {self.proc.returncode}'}"
        try:
            at = json.loads((self.work / "failure.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return error
        if "line" not in at:  # not in model.py's own code (the runner)
            return error
        code = at.get("code", "")
        code = code if len(code) <= 80 else code[:77] + "..."
        place = f"{at['function']}, line {at['line']}: `{code}`"
        return (f" in the module {at['module']} ({place}){error}" if at.get("module") else f" in {place}{error}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _start_runner(folder: Path) -> _Runner:
    return _Runner(folder)


def run_check(cm, folder: Path, runner: _Runner, *, what: str = "model.py") -> tuple[str, float]:
    """Run model.py (in `runner`) and the graph on the same cases; (summary line, max diff) or SelfCheckError."""
    from graphsurgeon.export.verify_cases import cases, random_lora

    tol = TOLERANCE.get(_dtype(cm), 1e-5)
    plan = cases(cm)
    lora_graph, lora_export = random_lora(cm)
    all_cases = [(label, x, False) for label, x in plan] + ([(label, x, True) for label, x in plan] if lora_graph else [])
    save_file({f"{i}.{n}": t.contiguous().clone() for i, (_, x, _) in enumerate(all_cases) for n, t in x.items()},
              str(runner.work / "inputs.safetensors"))
    if lora_export:
        save_file({k: v.contiguous() for k, v in lora_export.items()}, str(runner.work / "lora.safetensors"))
    cached = _cached_case(cm, all_cases)
    (runner.work / "plan.json").write_text(json.dumps({
        "outputs": list(cm.output_names), "cached": cached,
        "cases": [{"label": label, "inputs": list(x), "lora": lora} for label, x, lora in all_cases]}), encoding="utf-8")
    runner.send("go")
    want = [_graph_outputs(cm, x, lora_graph if lora else None) for _, x, lora in all_cases]
    if runner.wait_line() != "ready":
        refuse(folder, f"{what} fails when it is run on its own{runner.failure()}", runner.work)
    got = load_file(str(runner.work / "outputs.safetensors"))
    nonfinite = NONFINITE_NOTE in (cm.weights_note or "")  # NaN / inf weights: which outputs they spoil is op order
    worst = 0.0
    for i, (label, x, lora) in enumerate(all_cases):
        for name, w in want[i].items():
            g = got.get(f"{i}.{name}")
            if g is None:
                refuse(folder, f"{what} returns no {name!r} ({_case_text(label, lora)})", runner.work)
            diff, ok = compare(g, w, tol, finite_only=nonfinite)
            worst = max(worst, diff)
            if not ok:
                module = _first_differing_module(cm, runner, i, x, lora_graph if lora else None, tol)
                where = f"from the module {module}" if module else f"in its output {name!r}"
                refuse(folder, f"{what} differs from the captured graph {where} (max diff {diff:.1e} on {name!r}, "
                               f"{_case_text(label, lora)}, tolerance {tol:g})", runner.work)
    if cached is not None:  # the tokens fed after cached ones give the logits of the whole sequence
        worst = max(worst, _check_cache(got, want[cached]["logits"], tol, nonfinite, runner.work))
    lengths = f"{len(plan)} lengths" if len(plan) > 1 else "1 length (the model fixes it)"
    lora_text = ", random LoRA" if lora_graph else ", no LoRA"
    cache_text = ", KV cache" if cached is not None else ""
    spoilt = " (outputs the NaN / inf weights make non-finite not compared)" if nonfinite else ""
    return f"{what} checked against the graph: {lengths}{lora_text}{cache_text}, max diff {worst:.0e}{spoilt}", worst


def _check_cache(got: dict, logits: torch.Tensor, tol: float, nonfinite: bool, work: Path) -> float:
    """The max diff of the logits model.py computed through its KV cache; KVCacheRefused when they differ from the
    graph's on the whole sequence or the cached run failed."""
    if "cached.logits" not in got:
        error = (work / "cached_error.txt").read_text(encoding="utf-8") if (work / "cached_error.txt").exists() else ""
        raise KVCacheRefused(f"fed after cached tokens, model.py failed ({error or 'no logits'})")
    # another order of the same sums (attention over cached keys): within tol of the logits' largest magnitude
    scale = float(logits[torch.isfinite(logits)].abs().max()) if bool(torch.isfinite(logits).any()) else 0.0
    diff, ok = compare(got["cached.logits"], logits, tol * (1 + scale), finite_only=nonfinite)
    if not ok:
        raise KVCacheRefused(f"the logits of tokens fed after cached ones differ from the graph's (max diff {diff:.1e}, "
                             f"tolerance {tol * (1 + scale):.1e})")
    return diff


def _cached_case(cm, all_cases: list) -> int | None:
    """The case model.py also runs through its KV cache (the last one without padding: random LoRA where there is
    one); None when model.py keeps no cache or no case has four tokens to cut."""
    from graphsurgeon.export.codegen import generate

    if not generate(cm).model.kv_paths or "logits" not in cm.output_names:
        return None
    fits = [i for i, (_, x, _) in enumerate(all_cases) if "input_ids" in x and x["input_ids"].dim() == 2
            and x["input_ids"].shape[1] >= 4 and bool(x.get("attention_mask", x["input_ids"].new_ones(1)).all())]
    return fits[-1] if fits else None


def _case_text(label: str, lora: bool) -> str:
    return f"{label}, {'random non-zero LoRA' if lora else 'LoRA as exported'}"


def _dtype(cm) -> torch.dtype:
    return next((p.dtype for p in cm.gm.parameters() if p.is_floating_point()), torch.float32)


def compare(got: torch.Tensor, want: torch.Tensor, tol: float, finite_only: bool = False) -> tuple[float, bool]:
    """(max abs difference, within tolerance): |got - want| <= tol * (1 + |want|); non-finite values only where want
    has them. finite_only: positions where either side is non-finite are not compared (weights holding NaN / inf,
    kept by --allow-nonfinite, spoil outputs in an order that depends on how the ops are written)."""
    if got.shape != want.shape:
        return math.inf, False
    if not want.is_floating_point():
        same = bool(torch.equal(got.to(want.dtype), want))
        return (0.0 if same else math.inf), same
    g, w = got.double(), want.double()
    skip = (~torch.isfinite(g) | ~torch.isfinite(w)) if finite_only else (torch.isnan(g) & torch.isnan(w))
    err = (g - w).abs().masked_fill((g == w) | skip, 0.0)
    ok = bool(((err == 0) | (err <= tol * (1 + w.abs()))).all())  # NaN in want: no bound, only equality
    finite = err[torch.isfinite(err)]
    diff = float(finite.max()) if finite.numel() else 0.0
    return (diff if ok or finite.numel() == err.numel() else math.inf), ok


@contextlib.contextmanager
def _lora_weights(cm, values: dict[str, torch.Tensor] | None):
    """The graph with `values` (gm parameter name -> tensor) in place of its LoRA weights, restored after."""
    if not values:
        yield
        return
    params = dict(cm.gm.named_parameters(remove_duplicate=False))
    saved = {k: params[k].detach().clone() for k in values}
    try:
        with torch.no_grad():
            for k, v in values.items():
                params[k].copy_(v)
        yield
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                params[k].copy_(v)


@contextlib.contextmanager
def _one_thread():
    """Tiny inputs run fastest on one thread, and threads spin against the runner on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _graph_outputs(cm, inputs: dict, lora: dict | None) -> dict[str, torch.Tensor]:
    with torch.no_grad(), _one_thread(), _lora_weights(cm, lora):
        return {k: v for k, v in cm.run(**dict(inputs)).items() if isinstance(v, torch.Tensor)}


def _first_differing_module(cm, runner: _Runner, case: int, inputs: dict, lora: dict | None, tol: float) -> str:
    """The module of model.py where the difference starts, "" when none can be named: the first module (in the
    order modules finish) whose output matches no output of the graph's module of that path — or, when its inputs
    already differ, the module whose own code computed them (its nearest caller). Modules wrapped by a LoRA whose
    update is not zero (random, or exported with non-zero B) are not compared."""
    from graphsurgeon.export.verify_cases import graph_module_values

    runner.send(f"hooks {case}")
    order_file = runner.work / "modules.json"
    if runner.wait_line() != "done" or not order_file.exists():
        return ""
    counts = json.loads(order_file.read_text(encoding="utf-8"))
    mine = load_file(str(runner.work / "modules.safetensors"))
    with torch.no_grad(), _one_thread(), _lora_weights(cm, lora):
        graph = graph_module_values(cm, inputs)
    skip = set()
    for b in cm.loras.values():  # a LoRA-wrapped projection adds its update in model.py's module but next to it in
        if lora or _nonzero_update(cm, b):  # the graph: compared only where the update is zero (B = 0 as exported)
            skip |= {lora_export_name(b), b.target.module, b.path}

    def differs(path: str, side: str) -> bool:
        theirs = graph.get((path, side), [])
        for j in range(counts[path][side]):
            t = mine[f"{path}#{side}#{j}"]
            alike = [g for g in theirs if g.shape == t.shape]
            if alike and not any(compare(t, g, tol)[1] for g in alike):
                return True
        return False

    for path in counts:
        if path in skip or any(path.startswith(s + ".") for s in skip) or not differs(path, "out"):
            continue
        if not differs(path, "in"):
            return path
        callers = [p for p in counts if path.startswith(p + ".")]
        return max(callers, key=len) if callers else path
    return ""


def _nonzero_update(cm, block) -> bool:
    """Whether the LoRA `block` holds non-zero weights in every factor (its update can be non-zero)."""
    params = list(cm.gm.get_submodule(block.module_path).parameters())
    return bool(params) and all(bool(p.detach().ne(0).any()) for p in params)


def refuse(folder: Path, what: str, work: Path | None = None) -> None:
    """Keep the written folder for a bug report and raise the one-sentence refusal."""
    kept = keep_for_report(folder, what, work)
    where = f"the written folder is kept for a bug report in {kept}" if kept else "the written folder could not be kept"
    raise SelfCheckError(f"the export's self-check refused it: {what}; {where}.")


def keep_for_report(folder: Path, what: str, work: Path | None) -> Path | None:
    """Move the written folder under $GRAPHSURGEON_CACHE_DIR/failed-exports (with the check's inputs and outputs
    in its `self-check/`); None when it cannot be kept."""
    base = cache_root() / "failed-exports"
    dest = base / time.strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        n = 1
        while dest.exists():
            n += 1
            dest = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        shutil.move(str(folder), str(dest))
        report = dest / "self-check"
        report.mkdir()
        if work is not None:
            for f in work.iterdir():
                if f.is_file():
                    shutil.copy(f, report / f.name)
        (report / "refusal.txt").write_text(what + "\n", encoding="utf-8")
    except OSError:
        return None
    return dest


__all__ = ["Check", "KVCacheRefused", "SelfCheckError", "TOLERANCE", "compare", "run_check", "self_check", "static_check",
           "undefined_names"]
