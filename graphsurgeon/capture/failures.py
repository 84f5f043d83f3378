"""Why torch.export could not capture a model, in one sentence: the model's source line, the reason, and a hint
only where one can help (eager attention only when the failure is inside an SDPA / flash / mask code path)."""

from __future__ import annotations

import re
import traceback

from graphsurgeon.capture.ranges import unproven_guard

# torch.export names the model line that raised: 'The following call raised this error:\n  File "…", line N, in f\n    code'
_RAISED_AT = re.compile(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+), in (\w+)\s*\n\s*(.+)')
_DATA_DEPENDENT = ("data-dependent", "DataDependent", "data dependent")
# files whose code differs between attention implementations: eager attention takes another path through them
_ATTENTION_PATHS = ("sdpa_attention", "flash_attention", "flex_attention", "masking_utils", "modeling_attn_mask_utils")


def explain_failure(err: BaseException, name: str, attn: str | None = None) -> str:
    """One sentence: where export failed (file:line, function, code), why, and a hint when one applies."""
    text = str(err).strip()
    lines = text.splitlines()
    first = lines[0][:200] if lines else type(err).__name__
    missing = re.search(r"missing a required argument: '(\w+)'", first)
    if missing:  # BLIP-2 needs pixel_values (and image tokens its processor writes into input_ids)
        return (f"{name} needs the input {missing.group(1)!r}, which capture does not make up (it gives token inputs "
                "only); capture it from Python: capture(model, example_inputs={...}).")
    file, line, func, code = _source_line(err, text)
    where = f" in {file.rsplit('/', 1)[-1]}:{line} ({func}: `{code[:80]}`)" if file else ""
    if any(k in text or k in type(err).__name__ for k in _DATA_DEPENDENT):
        why = ("its code branches on (or sizes a tensor by) tensor values — data-dependent control flow, which "
               "torch.export cannot capture")
    elif "Constraints violated" in text:
        why = f"no range of the batch and sequence sizes satisfies its code ({unproven_guard(text)})"
    else:
        why = first.rstrip(".")
    hint = ""
    if attn != "eager" and any(p in (file or "") for p in _ATTENTION_PATHS):
        hint = " Try eager attention (--eager-attention), which spells attention out as matmul/softmax ops."
    return f"torch.export could not capture {name}{where}: {why}.{hint}"


def _source_line(err: BaseException, text: str) -> tuple[str, int, str, str]:
    """(file, line, function, code) of the model line that failed: the one torch.export names, else the innermost
    frame outside torch and graphsurgeon (transformers' own files count as the model's); ("", 0, "", "") if none."""
    m = _RAISED_AT.search(text)
    if m:
        return m.group(1), int(m.group(2)), m.group(3), m.group(4).strip()
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if "/transformers/" in frame.filename or ("/torch/" not in frame.filename
                                                  and "graphsurgeon" not in frame.filename):
            return frame.filename, frame.lineno or 0, frame.name, (frame.line or "").strip()
    return "", 0, "", ""
