"""`coverage.py --all`: every text model type transformers ships, one subprocess-isolated run each.

A type is a text type when transformers maps it to a seq2seq / causal / masked LM class whose config has no
vision or audio part (those are listed as skipped: they need non-text inputs). Each gets a tiny config (the
config class's defaults, size fields shrunk by name: tests/model_zoo.py, plus any other large width shrunk
generically), and goes through what a user does: save_pretrained → capture the folder → LoRA (r=2) on q and v
of every layer → export with the self-check → model.py, the graph and PEFT with the same random non-zero A, B
compared at 1e-5. Classes:
  exact          B=0 = the HF model, graph = PEFT, model.py = graph, all ≤ 1e-5
  refused        graphsurgeon said no, in one sentence (the sentence is the row's reason)
  not capturable torch.export cannot capture the HF model (its own limit; the reason names the line)
  wrong          an export was handed over that differs (must be 0)
  crash          a traceback from graphsurgeon (a bug), or the run timed out
  HF limit       the HF model itself cannot be built or run with the tiny config (the benchmark's limit)
Each worker process takes types one at a time; a type that hangs past --timeout kills its worker (a new one
starts), so one hang cannot stop the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests"), str(Path(__file__).resolve().parent)]
TAG = "@@coverage@@ "
TOL = 1e-5
MAX_PARAMS = 20_000_000  # a tiny config still this large is not tiny: skipped as the benchmark's limit
NON_TEXT = ("vision_config", "audio_config", "speech_config", "image_config", "visual", "vision_tower_config",
            "audio_encoder_config", "vq_config", "vision_encoder_config")
CLASSES = ("exact", "refused", "not capturable", "wrong", "crash", "HF limit")


def text_types() -> tuple[list[str], dict[str, str]]:
    """(text model types, {skipped type: why}) from transformers' LM mappings."""
    from transformers.models.auto import modeling_auto as auto

    names = {}
    for mapping in (auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                    auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        names.update({t: True for t in mapping})
    types, skipped = [], {}
    import transformers as tf

    for t in sorted(names):
        if t not in tf.CONFIG_MAPPING:
            skipped[t] = "no config class in this transformers"
            continue
        try:
            cfg = tf.CONFIG_MAPPING[t]()
        except Exception as err:  # noqa: BLE001 - a config that cannot be built with its defaults
            skipped[t] = f"its config cannot be built with defaults ({type(err).__name__})"
            continue
        sub = [k for k in NON_TEXT if getattr(cfg, k, None) is not None]
        if sub and t not in ("llama4",):  # llama4: its text model (model_zoo.TEXT_MODEL)
            skipped[t] = f"needs non-text inputs ({sub[0]})"
            continue
        types.append(t)
    return types, skipped


# ----------------------------------------------------------------------------- one type (in a worker)

def tiny_config(model_type: str, mha: bool = False, per_kind: int = 1):
    """The type's config with small sizes: tests/model_zoo.py's named sizes, then generic rules for what those do
    not name (expert counts and top-k, MLA head dims and ranks, other widths), and per-layer lists cut so that every
    layer kind stays (a hybrid keeps one attention layer and one linear-attention layer). mha: as many key/value
    heads as query heads (for models that refuse grouped-query attention). per_kind: layers kept of each kind (Zamba ties
    its shared transformer across its hybrid layers, so it needs two of them)."""
    import transformers as tf

    import model_zoo

    cls = tf.CONFIG_MAPPING[model_type]
    default = cls()
    kwargs = _generic(default, model_zoo._small(default, model_zoo.OVERRIDES.get(model_type, {})), mha, per_kind)
    for name in ("text_config", "decoder_config", "encoder_config"):
        sub = getattr(default, name, None)
        if isinstance(sub, tf.PretrainedConfig):
            kwargs[name] = {**sub.to_dict(), **_generic(sub, model_zoo._small(sub, {}), mha, per_kind)}
    return cls(**kwargs)


def model_class(model_type: str, cfg):
    """The class a LoRA user fine-tunes (model_zoo's choice: seq2seq LM, masked LM, causal LM, base model)."""
    import transformers as tf

    import model_zoo

    if model_type in model_zoo.TEXT_MODEL:
        return getattr(tf, model_zoo.TEXT_MODEL[model_type])
    auto = tf.models.auto.modeling_auto
    order = ([auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES] if getattr(cfg, "is_encoder_decoder", False) else [])
    order += [auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, auto.MODEL_MAPPING_NAMES]
    classes = [getattr(tf, m[model_type], None) for m in order if model_type in m]
    classes = [c for c in classes if c is not None]
    for cls in classes:
        if issubclass(type(cfg), cls.config_class):
            return cls
    if classes:  # a type served by another type's classes (sarvam_mla: DeepseekV3ForCausalLM), as the auto classes do
        return classes[0]
    raise KeyError(f"no LM class of {model_type} takes its config")


def _generic(cfg, kwargs: dict, mha: bool, per_kind: int = 1) -> dict:
    """Add to `kwargs` the shrinking rules model_zoo's named sizes miss."""
    fields = cfg.to_dict()
    aliases = getattr(cfg, "attribute_map", {})
    layers_key = aliases.get("num_hidden_layers", "num_hidden_layers")
    n = fields.get(layers_key)
    out = dict(kwargs)
    rope = "qk_rope_head_dim" in fields
    hidden_key = aliases.get("hidden_size", "hidden_size")
    hidden, small = fields.get(hidden_key), out.get(hidden_key, 64)
    hidden = hidden if isinstance(hidden, int) and not isinstance(hidden, bool) else None
    for key, value in fields.items():
        if not isinstance(value, int) or isinstance(value, bool) or value is None:
            continue
        low = key.lower()
        if "per_tok" in low or low in ("top_k", "moe_k", "moe_topk", "num_selected_experts", "experts_per_token"):
            out[key] = min(value, 2)
        elif "expert" in low and "shared" not in low and value > 4:
            out[key] = 4
        elif low in ("n_group", "topk_group", "num_expert_group"):
            out[key] = 1
        elif "head_dim" in low and low not in ("head_dim",) or (low == "head_dim" and rope):
            out[key] = 8 if ("rope" in low or "nope" in low or low == "head_dim") else 16
        elif "lora_rank" in low and value > 32:
            out[key] = 32
        elif low.endswith("vocab_size") and value > 128:
            out[key] = 128
        elif any(w in low for w in ("hidden_size", "intermediate", "ffn", "d_model", "n_embd", "embed_dim")) \
                and value > 256 and "max" not in low and "position" not in low and key not in out:
            ratio = value / hidden if hidden and "hidden_size" in low else 0  # another hidden size k × the model's
            out[key] = int(ratio) * small if ratio in (2, 3, 4) else 64  # stays k × (Zamba's attention_hidden_size)
        elif ("n_heads" in low or "num_heads" in low) and value > 4 and key not in out:
            out[key] = 4
    if rope:
        out["qk_head_dim"] = 16
    if (rope or mha) and "num_key_value_heads" in out:  # MLA's eager attention: one key/value head per query head
        out["num_key_value_heads"] = out.get(aliases.get("num_attention_heads", "num_attention_heads"), 4)
    indices = {k: v for k, v in fields.items() if _layer_indices(k.lower(), v, n)}  # Llama 4's moe_layers: [0, 1, …, 47]
    lists = {k: v for k, v in fields.items() if isinstance(v, list) and n and len(v) == n and k not in indices}
    if lists or indices:  # one layer of each kind (in order), then the first layers up to model_zoo's count
        kinds = [tuple(str(v[i]) for v in lists.values()) + tuple(i in v for v in indices.values()) for i in range(n)]
        keep = sorted({i for k in set(kinds) for i in [j for j, x in enumerate(kinds) if x == k][:per_kind]}
                      | set(range(min(2, n))))
        out[layers_key] = len(keep)
        out.update({k: [v[i] for i in keep] for k, v in lists.items()})
        out.update({k: [keep.index(i) for i in v if i in keep] for k, v in indices.items()})
    return out


def _layer_indices(key: str, value, n: int | None) -> bool:
    """Whether a config field lists layer indices (named so; strictly increasing ints below the layer count), not one
    value per layer (SeamlessM4T's resblock_kernel_sizes [3, 7, 11] are no layers): a layer's kind is whether it is
    listed, and the list is renumbered for the layers kept."""
    return (isinstance(value, list) and bool(n) and len(value) > 2 and any(w in key for w in ("layer", "idx", "ids"))
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            and value == sorted(set(value)) and value[-1] < n)


def run_one(model_type: str, tmp: Path) -> dict:
    """The row of one type: its class, what each step gave, and why it stopped."""
    row = {"type": model_type, "class": "", "status": "", "reason": "", "b0": None, "peft": None, "export": None,
           "columns": "", "generate": "", "seconds": 0.0, "notes": ""}
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        _steps(model_type, tmp, row)
    except Exception as err:  # noqa: BLE001 - the row says which step failed and why
        row["status"] = row["status"] or _classify(err)
        text = str(err).strip().splitlines()
        row["reason"] = (text[0] if text else type(err).__name__)[:300]
        if row["status"] == "crash":
            frame = traceback.extract_tb(err.__traceback__)[-1]
            row["reason"] = f"{type(err).__name__}: {row['reason']} ({Path(frame.filename).name}:{frame.lineno})"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["cpu"] = round(cpu_seconds() - c0, 1)  # this worker's and its children's CPU seconds: the machine's share
    return row


def _classify(err: BaseException) -> str:
    from graphsurgeon.errors import CaptureError, GraphsurgeonError

    if isinstance(err, CaptureError) and str(err).startswith("torch.export could not capture"):
        return "not capturable"
    if isinstance(err, GraphsurgeonError):
        return "refused"
    return "crash"


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the self-check's model.py runner)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Phases:
    """CPU seconds per step of one type (this process + its finished children; wall time means little on a loaded
    machine), kept in the row's "phases": `with phase("capture"): ...`."""

    def __init__(self, row: dict) -> None:
        self.row = row
        row["phases"] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = cpu_seconds()
        try:
            yield
        finally:
            spent = self.row["phases"].get(name, 0.0) + cpu_seconds() - t
            self.row["phases"][name] = round(spent, 2)


def _steps(model_type: str, tmp: Path, row: dict) -> None:
    import torch

    from graphsurgeon.capture import capture
    from graphsurgeon.errors import GraphsurgeonError
    from graphsurgeon.surgery import LoRAConfig, add_lora, resolve_targets
    from graphsurgeon.validate import validate_full

    from coverage import _peft, _truth, export_diff, exported_model, first, generate_check
    from surgery_models import randomize

    folder = tmp / model_type
    phase = _Phases(row)
    row["status"] = "HF limit"  # until the HF model is built and runs
    with phase("build"):
        try:
            model, cfg, cls = _tiny_model(model_type, False, row)
        except Exception:  # noqa: BLE001 - some models refuse grouped-query attention: once more with as many kv heads
            try:
                model, cfg, cls = _tiny_model(model_type, True, row)
            except Exception:  # noqa: BLE001 - and some need two layers of each kind (Zamba's tied shared layers)
                model, cfg, cls = _tiny_model(model_type, False, row, per_kind=2)
    with phase("save"):
        model.save_pretrained(str(folder), safe_serialization=True)
    row["status"] = ""
    with phase("capture"):
        cm = capture(str(folder))
    row["notes"] = "; ".join(cm.notes)
    roles = ("q", "v")
    with phase("targets"):
        try:
            targets = resolve_targets(cm, roles, "all")
        except GraphsurgeonError as err:  # no attention: the model's own targets, as the sentence names them
            named = re.search(r"LoRA targets: ([\w, ]+) \(pass them", str(err))
            if not named or " has no attention " not in str(err):  # an attention whose q/v cannot be adapted: refused
                raise
            roles = tuple(n.strip() for n in named.group(1).split(",") if n.strip() != "lm_head")[:2]
            targets = resolve_targets(cm, roles, "all")
            row["notes"] = "; ".join(filter(None, [row["notes"], f"no attention: LoRA on {', '.join(roles)}"]))
    with phase("reference"):
        reference = cls.from_pretrained(str(folder), attn_implementation=cm.attn_implementation).eval()
    with phase("truth"):
        try:
            truth = _truth(reference, model_type, cm, targets)
            exact = all(set(t.columns if t.columns is not None else range(t.out_features))
                        == truth[(t.attention, t.role)][t.module.rsplit(".", 1)[-1]] for t in targets)
            row["columns"] = "✓" if exact else "✗"
        except Exception as err:  # noqa: BLE001 - marker rows need one attention call per graph attention
            truth, row["columns"] = None, f"unverified ({str(err)[:60]})"
    with phase("hf run"), torch.no_grad():
        original = first(reference(**cm.example_inputs))
    with phase("lora"):
        add_lora(cm, roles, "all", LoRAConfig(r=2, alpha=4))
    with phase("validate"):
        problems = validate_full(cm)
    if problems:
        raise GraphsurgeonError(f"validation: {str(problems[0])[:200]}")
    with torch.no_grad():
        with phase("graph run"):
            row["b0"] = (first(cm.run(**cm.example_inputs)) - original).abs().max().item()
            randomize(cm, seed=3)
            ours = first(cm.run(**cm.example_inputs))
        with phase("peft"):
            peft_model = _peft(reference, cm, truth)
            row["peft"] = (ours - first(peft_model(**cm.example_inputs))).abs().max().item()
    with phase("export"):
        row["export"] = export_diff(cm, tmp / f"{model_type}-out", ours)
    with phase("generate"):
        row["generate"] = generate_check(exported_model(tmp / f"{model_type}-out"), peft_model, cm.example_inputs)
    if cm.kv_cache_off:  # the self-check wrote model.py again without its KV cache
        row["notes"] = "; ".join(filter(None, [row["notes"], f"generate() keeps no KV cache: with one, {cm.kv_cache_off}"]))
    bad = [k for k in ("b0", "peft", "export") if row[k] > TOL * (1 + ours.abs().max().item())] + \
        (["columns"] if row["columns"] == "✗" else []) + (["generate"] if row["generate"].startswith("✗") else [])
    row["status"] = "wrong" if bad else "exact"
    if bad:
        row["reason"] = "differs: " + ", ".join(
            f"{k} {row[k]:.1e}" if k in ("b0", "peft", "export") else "q/v columns" if k == "columns"
            else f"generate {row[k]}" for k in bad)


def _tiny_model(model_type: str, mha: bool, row: dict, per_kind: int = 1):
    """(the tiny seeded model in eval mode, its config, its class), run once on token ids."""
    import torch

    cfg = tiny_config(model_type, mha, per_kind)
    cls = model_class(model_type, cfg)
    row["class"] = cls.__name__
    if not isinstance(cfg, cls.config_class) and isinstance(getattr(cfg, "text_config", None), cls.config_class):
        cfg = cfg.text_config
    with torch.device("meta"):
        n = sum(p.numel() for p in cls._from_config(cfg, attn_implementation="eager").parameters())
    if n > MAX_PARAMS:
        raise RuntimeError(f"the tiny config still has {n / 1e6:.0f} M parameters")
    torch.manual_seed(0)
    model = cls._from_config(cfg, attn_implementation="eager").eval()
    probe = {"input_ids": torch.randint(3, 100, (2, 8))}
    if getattr(cfg, "is_encoder_decoder", False):
        probe["decoder_input_ids"] = torch.randint(3, 100, (2, 5))
    with torch.no_grad():
        model(**probe)
    return model, cfg, cls


def worker() -> None:
    """Read type names on stdin; print each row as one tagged JSON line."""
    import importlib
    import tempfile

    # imported once per worker, before its first type, so no row's time holds them (coverage: graphsurgeon's
    # capture, surgery, validate and export with it)
    for name in ("peft", "transformers", "coverage", "graphsurgeon.export"):
        importlib.import_module(name)

    with tempfile.TemporaryDirectory(prefix="graphsurgeon-coverage-") as tmp:
        for line in sys.stdin:
            row = run_one(line.strip(), Path(tmp))
            print(TAG + json.dumps(row), flush=True)


# ----------------------------------------------------------------------------- the parent

class _Worker:
    def __init__(self, log) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)

    def run(self, model_type: str, timeout: float) -> dict | None:
        self.proc.stdin.write(model_type + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return {"status": "crash", "reason": f"the worker died (exit {self.proc.wait()})"}
            if line.startswith(TAG):
                return json.loads(line[len(TAG):])

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def run_all(types: list[str], jobs: int, timeout: float, log_path: Path, rows_path: Path | None = None) -> list[dict]:
    """Rows of every type, `jobs` workers at once; a type past `timeout` seconds is a crash row (timed out).
    rows_path: each row is appended there as one JSON line when done, and rows already there are not run again."""
    rows: dict[str, dict] = {}
    if rows_path is not None and rows_path.exists():
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["type"] in types:
                rows[row["type"]] = row
    todo: queue.Queue = queue.Queue()
    for t in types:
        if t not in rows:
            todo.put(t)
    lock = threading.Lock()

    def slot() -> None:
        with open(log_path, "a") as log:
            w = _Worker(log)
            while True:
                try:
                    t = todo.get_nowait()
                except queue.Empty:
                    break
                t0 = time.perf_counter()
                row = w.run(t, timeout)
                if row is None or row.get("type") != t:
                    w.kill()
                    w = _Worker(log)
                    why = f"timed out after {timeout:.0f} s" if row is None else row.get("reason", "")
                    row = {"type": t, "class": "", "status": "crash", "reason": why, "b0": None, "peft": None,
                           "export": None, "columns": "", "seconds": round(time.perf_counter() - t0, 1), "notes": ""}
                with lock:
                    rows[t] = row
                    if rows_path is not None:
                        with open(rows_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(row) + "\n")
                    print(f"[{len(rows)}/{len(types)}] {t:28s} {row['status']:14s} {row['seconds']:6.1f} s "
                          f"{row['reason'][:110]}", file=sys.stderr, flush=True)
            w.kill()

    threads = [threading.Thread(target=slot) for _ in range(jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [rows[t] for t in types]


def table(rows: list[dict], skipped: dict[str, str], minutes: float, jobs: int, not_run: list[str] = ()) -> str:
    """The README section: totals, the percentage exact, the table, the skipped types."""
    import transformers

    def num(v):
        return "" if v is None else f"{v:.0e}"

    counts = {c: sum(r["status"] == c for r in rows) for c in CLASSES}
    runnable = len(rows) - counts["HF limit"]
    pct = 100.0 * counts["exact"] / max(1, runnable)
    total = f"{len(rows)} of {len(rows) + len(not_run)}" if not_run else f"{len(rows)}"
    lines = [f"{total} text model types run (transformers {transformers.__version__}); "
             + ", ".join(f"{c}: {counts[c]}" for c in CLASSES)
             + f". Exact: {pct:.0f} % of the {runnable} types whose HF model runs with the tiny config "
             f"({100.0 * counts['exact'] / max(1, len(rows)):.0f} % of all). Run: {minutes:.1f} min with {jobs} worker "
             f"processes; per type {statistics.median(r['seconds'] for r in rows):.0f} s median (its worker's wall time)."
             + _cpu_text(rows) if rows else "No rows.",
             "", "| type | class | result | B=0 | PEFT | model.py | q/v columns | generate | time | reason / notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        why = (r["reason"] or r.get("notes") or "").replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {r['type']} | {r['class']} | {r['status']} | {num(r['b0'])} | {num(r['peft'])} | "
                     f"{num(r['export'])} | {r['columns']} | {r.get('generate', '')} | {r['seconds']:.0f} s | {why} |")
    if not_run:
        lines += ["", f"Not run yet ({len(not_run)}; `--rows` resumes): " + ", ".join(not_run) + "."]
    lines += ["", f"Skipped ({len(skipped)}): " + "; ".join(f"{t} ({why})" for t, why in sorted(skipped.items())) + "."]
    return "\n".join(lines)


def _cpu_text(rows: list[dict]) -> str:
    """The CPU seconds the rows took (worker + its self-check processes): the run's floor on an idle machine."""
    cpu = [r["cpu"] for r in rows if r.get("cpu") is not None]
    if not cpu:
        return ""
    return (f" CPU: {sum(cpu) / 60:.1f} min in all over {len(cpu)} types ({statistics.median(cpu):.1f} s median per type)"
            f", so ≥ {sum(cpu) / 120:.1f} min of wall time on 2 idle cores.")


BEGIN, END = "<!-- coverage --all: begin (generated by benchmarks/coverage.py --all) -->", "<!-- coverage --all: end -->"


def write_readme(text: str, readme: Path) -> None:
    """Replace the generated section between the markers (appended to the Coverage section the first time)."""
    body = readme.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = body[:body.index(BEGIN)] + block + body[body.index(END) + len(END):]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(readme)


def main(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="coverage.py --all")
    p.add_argument("--all", action="store_true")
    p.add_argument("--jobs", type=int, default=2, help="worker processes at once")
    p.add_argument("--timeout", type=float, default=180, help="seconds one type may take before its worker is killed")
    p.add_argument("--readme", help="write the table into this README between the generated-section markers")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--rows", help="append each row to this JSON-lines file as it is done; rows already there are kept "
                                  "(a stopped run goes on where it stopped)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: the table of the rows already in --rows (types not run are counted as such)")
    p.add_argument("types", nargs="*", help="only these types (default: every text type)")
    args = p.parse_args(argv)
    types, skipped = text_types()
    if args.types:
        import transformers

        unknown = [t for t in args.types if t not in transformers.CONFIG_MAPPING and t not in skipped]
        if unknown:
            p.error(f"{', '.join(unknown)} is not a model type of transformers {transformers.__version__}; name types "
                    "as config.json's model_type spells them (e.g. llama, gpt2)")
        for t in args.types:
            if t in skipped:
                print(f"{t}: skipped ({skipped[t]})", file=sys.stderr)
        types = [t for t in types if t in args.types] + [t for t in args.types if t not in types and t not in skipped]
    start = time.perf_counter()
    if args.report_only:
        done = {}
        for line in Path(args.rows).read_text(encoding="utf-8").splitlines():
            done[json.loads(line)["type"]] = json.loads(line)
        rows = [done[t] for t in types if t in done]
        minutes = float(os.environ.get("COVERAGE_MINUTES", "0"))
        text = table(rows, skipped, minutes, args.jobs, [t for t in types if t not in done])
    else:
        rows = run_all(types, args.jobs, args.timeout, Path(os.environ.get("COVERAGE_LOG", "/tmp/coverage-all.log")),
                       Path(args.rows) if args.rows else None)
        text = table(rows, skipped, (time.perf_counter() - start) / 60, args.jobs)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "skipped": skipped}, indent=1), encoding="utf-8")
    if args.readme:
        write_readme(text, Path(args.readme))


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import warnings

        warnings.filterwarnings("ignore")
        worker()
    else:
        main(sys.argv[1:])
