"""Weights checked by kind and by value: the dtypes a safetensors header declares, and non-finite values.

- `header_dtypes(files)`: tensor name -> the header's dtype ("F32", "BOOL", …), read without loading a tensor.
- `dtype_problems(expected, found)`: a floating-point tensor of the model stored as an integer or bool type is wrong
  (transformers casts it without a word: a bool matrix becomes 0/1 weights); another float width (F16 for a float32
  model) is only noted, transformers converts it while loading.
- `nonfinite(named_tensors)`: a streamed scan, one sum per tensor (no extra memory), for NaN / inf.
- `FileScan(files)`: the same check of the files' bytes on worker threads, started before the model loads and
  joined after it (the load is Python work holding the GIL, a torch sum releases it), so that only the tensors the
  load did not take unchanged from a file need a scan of their own afterwards (`unchecked`).
"""

from __future__ import annotations

import json
import mmap
import threading
from dataclasses import dataclass, field
from pathlib import Path

NONFINITE_NOTE = "WEIGHTS HOLD NaN OR inf"  # in the weights note of a model loaded with --allow-nonfinite
SHOWN = 3

FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}
TORCH_CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
               "float8_e5m2": "F8_E5M2", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
               "bool": "BOOL"}
NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
         "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}


def dtype_name(code: str) -> str:
    """The torch name of a safetensors dtype code ("F16" -> "float16")."""
    return NAMES.get(code, code.lower())


def header_dtypes(files: list[Path]) -> dict[str, str]:
    """Tensor name -> safetensors dtype code, from the headers of `files` (the tensors are not read)."""
    out: dict[str, str] = {}
    for f in files:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                continue  # read_header has refused such a file already
        if isinstance(header, dict):
            out.update({k: str(v.get("dtype")) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)})
    return out


@dataclass
class DtypeReport:
    wrong: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (dtype in the file, the model's dtype)
    converted: dict[str, tuple[str, str]] = field(default_factory=dict)  # another float width, converted on load

    def sentence(self, name: str, where) -> str:
        keys = sorted(self.wrong)[:SHOWN]
        listed = ", ".join(f"{k} is {self.wrong[k][0]} in the file, the model's parameter is {self.wrong[k][1]}"
                           for k in keys)
        more = f", and {len(self.wrong) - SHOWN} more" if len(self.wrong) > SHOWN else ""
        return (f"{name}: the weights in {where} store floating-point parameters as integers or booleans ({listed}"
                f"{more}), which would load as whole numbers, not weights; give the file the model's float weights.")

    def note(self) -> str:
        """'' or the note said with the weights: another float width, converted while loading."""
        if not self.converted:
            return ""
        pairs = sorted({v for v in self.converted.values()})
        how = ", ".join(f"{a} in the file, {b} in the model" for a, b in pairs)
        return f"{len(self.converted)} tensor{'s' if len(self.converted) > 1 else ''} converted while loading ({how})"


def dtype_problems(expected: dict[str, str], found: dict[str, str]) -> DtypeReport:
    """Compare the model's dtypes (`expected`: key -> torch name) with the file's codes (`found`, same keys)."""
    out = DtypeReport()
    for key, want in expected.items():
        code = found.get(key)
        if code is None or TORCH_CODES.get(want) == code:
            continue
        if TORCH_CODES.get(want) not in FLOAT_CODES:
            continue  # an integer buffer (position_ids): transformers' own business
        if code in FLOAT_CODES:
            out.converted[key] = (dtype_name(code), want)
        else:
            out.wrong[key] = (dtype_name(code), want)
    return out


def nonfinite(named_tensors) -> dict[str, tuple[int, int]]:
    """Tensor name -> (NaN count, inf count) for every floating-point tensor holding either.

    A streamed scan: one sum per tensor (NaN and inf propagate through it; no mask is allocated, about 30× faster
    than isfinite on CPU); only a tensor whose sum is not finite (NaN, inf, or finite values overflowing) is counted.
    One thread: a sum is bound by memory, and on a busy machine the thread pool's wake-ups cost 4× the arithmetic
    (benchmarks/weights_scan.py).
    """
    import torch

    bad: dict[str, tuple[int, int]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, t in named_tensors:
            if not t.is_floating_point() or t.device.type == "meta" or bool(torch.isfinite(t.detach().sum())):
                continue
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if nan or inf:  # else: large finite values whose sum overflowed
                bad[name] = (nan, inf)
    finally:
        torch.set_num_threads(threads)
    return bad


LOSSLESS = {("F16", "float32"), ("BF16", "float32"), ("F16", "float64"), ("BF16", "float64"), ("F32", "float64")}
SCANNED = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
RUN_BYTES = 64 * 2**20  # a run of neighbouring tensors summed at once: few GIL round trips, still work for 4 workers


class FileScan:
    """The floating-point tensors of safetensors `files` checked for NaN / inf on worker threads, during the load.

    Start it before the load and call `unchecked(model, sources)` after: the load maps the files without reading them
    (transformers gives the parameters views of the file, and its own work is Python holding the GIL), so the scan
    reads the same pages on other cores meanwhile (torch releases the GIL in a sum). One sum per run of neighbouring
    tensors of one dtype (≤ RUN_BYTES: one GIL round trip per run, not per tensor, so the load's Python cannot hold a
    worker up 76 times), accumulated in float32, each worker on one torch thread; one worker per spare core, at most
    4; each run's pages requested from disk at once (MADV_WILLNEED: a cold cache is read in large requests, not
    fault by fault). Only a run whose sum is not finite is summed tensor by tensor. A tensor the scan could not read
    (an odd header, a float8 dtype) is simply not vouched for: the scan after the load covers it.
    """

    def __init__(self, files: list[Path]):
        import os
        import queue

        import torch

        self.codes: dict[str, str] = {}  # file key -> dtype code, for every tensor found finite
        self.bad: set[str] = set()  # file keys holding NaN or inf (or an unreadable entry)
        self._stop = threading.Event()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._maps = []
        for f in files:
            try:
                self._plan(f)
            except (OSError, ValueError, TypeError, KeyError):
                continue  # the header check has refused such a file, or the tensors stay unchecked
        self._threads_before = torch.get_num_threads()  # also settles this thread's own count before workers change it
        workers = max(1, min(4, (os.cpu_count() or 2) - 1))
        self._threads = [threading.Thread(target=self._run, name="graphsurgeon-weights-scan", daemon=True)
                         for _ in range(workers)]
        for t in self._threads:
            t.start()

    def _plan(self, file: Path) -> None:
        """Queue the float tensors of `file` as runs: neighbours in the file of one dtype, up to RUN_BYTES (a bigger
        tensor alone), each run one sum, so a worker takes the GIL once per run, not once per tensor."""
        with file.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(data)
        tensors = sorted((tuple(int(x) for x in info["data_offsets"]), key, info["dtype"]) for key, info in header.items()
                         if key != "__metadata__" and isinstance(info, dict) and info.get("dtype") in SCANNED)
        runs: list[list] = []  # [code, start, end, [(key, start, end), ...]]
        for (start, end), key, code in tensors:
            if runs and runs[-1][0] == code and runs[-1][2] == start and end - runs[-1][1] <= RUN_BYTES:
                runs[-1][2] = end
                runs[-1][3].append((key, start, end))
            else:
                runs.append([code, start, end, [(key, start, end)]])
        for code, start, end, members in runs:
            self._work.put((code, data, 8 + n, start, end, members))

    def _run(self) -> None:
        import queue
        import warnings

        import torch

        torch.set_num_threads(1)  # this thread's sums (a team per worker would fight the load for the cores)
        try:
            while not self._stop.is_set():
                try:
                    code, data, base, start, end, members = self._work.get_nowait()
                except queue.Empty:
                    return
                dtype = getattr(torch, SCANNED[code])
                _read_ahead(data, base + start, end - start)
                with warnings.catch_warnings():  # a read-only buffer: nothing writes to it
                    warnings.simplefilter("ignore")
                    values = torch.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize,
                                              offset=base + start)
                if bool(torch.isfinite(values.sum(dtype=torch.float32))):  # NaN / inf propagate through the sum
                    self.codes.update((key, code) for key, _, _ in members)
                else:  # which tensors (or only large finite values whose sum overflowed)
                    for key, a, b in members:
                        part = values[(a - start) // dtype.itemsize:(b - start) // dtype.itemsize]
                        if _finite(part):
                            self.codes[key] = code
                        else:
                            self.bad.add(key)
                        del part
                del values
        except Exception:  # noqa: BLE001 - what was not checked is checked after the load
            self._stop.set()
        finally:
            torch.set_num_threads(self._threads_before)

    def stop(self) -> None:
        """End the scan (early when the load failed); returns when the workers have."""
        self._stop.set()
        for t in self._threads:
            t.join()
        for data in self._maps:
            try:
                data.close()
            except BufferError:  # a tensor of a failed worker still views it: closed when collected
                pass
        self._maps = []

    def unchecked(self, model, sources: dict[str, str] | None) -> list | None:
        """The model's (name, tensor) pairs this scan did not vouch for, or None when it cannot vouch per tensor.

        `sources` maps the model's names to the file keys loaded into them (the header check's; None when
        transformers converts tensors while loading). A tensor is vouched for when its file tensor was found finite
        and converting it to the model's dtype cannot overflow. None (scan everything) when the files hold NaN / inf
        or a worker failed: the full scan names the model's tensors and counts their values.
        """
        for t in self._threads:
            t.join()
        if sources is None or self.bad or self._stop.is_set():
            return None
        out = []
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            code = self.codes.get(sources.get(name, ""))
            want = str(t.dtype).removeprefix("torch.")
            if code is None or (TORCH_CODES.get(want) != code and (code, want) not in LOSSLESS):
                out.append((name, t))
        return out


def _read_ahead(data: mmap.mmap, offset: int, size: int) -> None:
    """Ask the kernel to read a run from disk at once (a cold page cache: one large read instead of a fault per
    readahead window); a no-op when the pages are cached, harmless where madvise is missing."""
    start = offset - offset % mmap.PAGESIZE
    try:
        data.madvise(mmap.MADV_WILLNEED, start, offset + size - start)
    except (AttributeError, OSError, ValueError):
        pass


def _finite(values) -> bool:
    """No NaN / inf in `values`: one sum (NaN and inf propagate), and a count only when the sum is not finite."""
    import torch

    return bool(torch.isfinite(values.sum(dtype=torch.float32))) or bool(torch.isfinite(values).all())


def nonfinite_text(bad: dict[str, tuple[int, int]]) -> str:
    """'h.0.attn.c_attn.weight holds 2 NaN, lm_head.weight holds 1 inf, and 3 more tensors'."""
    parts = []
    for k in sorted(bad)[:SHOWN]:
        nan, inf = bad[k]
        parts.append(f"{k} holds " + " and ".join(t for t in (nan and f"{nan} NaN", inf and f"{inf} inf") if t))
    more = f", and {len(bad) - SHOWN} more tensor{'s' if len(bad) - SHOWN > 1 else ''}" if len(bad) > SHOWN else ""
    return ", ".join(parts) + more
