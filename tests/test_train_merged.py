"""merged/ is a drop-in Hugging Face folder: pipeline() runs on it with no warning, only the keys from_pretrained
expects, the source's tokenizer and generation config, a model card, and save_pretrained round-trips."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.surgery import LoRAConfig, add_lora

sys.path.insert(0, str(Path(__file__).parent))
from surgery_models import build, randomize  # noqa: E402
from test_export import finish, max_diff, start_train  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"]
CASES = {  # pipeline task -> (arch, head, input)
    "text-generation": ("gpt2", None, "the cat sat"),
    "text-classification": ("bert", "ForSequenceClassification", "the cat sat on the mat"),
    "fill-mask": ("bert", "ForMaskedLM", "the cat [MASK] on the mat"),
}


def source_folder(folder: Path, arch: str, head: str | None) -> Path:
    """A tiny model saved with save_pretrained, with a word-level tokenizer (and GPT-2's generation config)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    model = build(arch, head)
    model.save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(101 - len(WORDS))])},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if arch == "bert":
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    special = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    if arch == "gpt2":
        special.update(bos_token="[CLS]", eos_token="[SEP]")
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def merged_runs(tmp_path_factory) -> dict:
    """task -> (its folder, train.py's run): every case's source folder captured, LoRA on q and v with random A and B,
    exported; then the three `train.py --merge` runs started at once (each a process of its own, as a user runs it)."""
    folders = {}
    for task, (arch, head, _) in CASES.items():
        tmp = tmp_path_factory.mktemp(task)
        cm = capture(str(source_folder(tmp / "source", arch, head)))
        add_lora(cm, roles=("q", "v"), config=LoRAConfig(r=4, alpha=8))
        randomize(cm)
        export_folder(cm, tmp / "out")
        folders[task] = tmp
    procs = {task: start_train(tmp / "out", "--synthetic", "--steps", "3", "--merge", "--run-name", "r",
                               *(("--mask-token-id", "4") if CASES[task][1] == "ForMaskedLM" else ()))
             for task, tmp in folders.items()}
    return {task: (folders[task], finish(proc)) for task, proc in procs.items()}


@pytest.mark.parametrize("task", list(CASES))
def test_pipeline_on_merged_runs_without_a_warning(task, merged_runs):
    from transformers import AutoConfig, pipeline

    arch, head, text = CASES[task]
    tmp_path, result = merged_runs[task]
    source = tmp_path / "source"
    assert result.returncode == 0, result.stderr
    merged = tmp_path / "out" / "runs" / "r" / "merged"
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors", "README.md"):
        assert (merged / name).is_file(), name
    assert (merged / "generation_config.json").is_file() == (arch == "gpt2")
    card = (merged / "README.md").read_text()
    assert "| r | alpha |" in card and str(source.resolve()) in card and "3 steps" in card
    model_class = type(build(arch, head))
    with torch.device("meta"):
        expected = set(model_class(AutoConfig.from_pretrained(merged)).state_dict())
    assert set(load_file(str(merged / "model.safetensors"))) <= expected  # nothing from_pretrained would report

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = pipeline(task, model=str(merged))
            out = pipe(text, max_new_tokens=3, do_sample=False) if task == "text-generation" else pipe(text)
    finally:
        logger.removeHandler(handler)
    assert out and not [r.getMessage() for r in records] and not [str(w.message) for w in caught]

    model = model_class.from_pretrained(str(merged)).eval()
    model.save_pretrained(tmp_path / "again")
    again = model_class.from_pretrained(str(tmp_path / "again")).eval()
    x = {"input_ids": torch.tensor([[5, 6, 7, 8, 5, 9]])}
    with torch.no_grad():
        assert max_diff(model(**x).logits, again(**x).logits) == 0
