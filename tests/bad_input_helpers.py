"""Shared by the bad-input tests (issue 15): run the CLI in-process, read a folder, a valid tiny GPT-2 folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import transformers

from graphsurgeon.cli import main


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes (hidden temp files included): 'nothing was written or changed'."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def refused_unchanged(valid: Path, breaks, message: str, tmp_path: Path, capsys) -> None:
    """A copy of the folder `valid`, broken by `breaks`, is refused by `graphsurgeon lora` in one line holding
    `message`, exit 2, and nothing under tmp_path is written or changed."""
    folder = tmp_path / "model"
    shutil.copytree(valid, folder)
    breaks(folder)
    before = files_under(tmp_path)
    code, out, err = run_cli(["lora", str(folder), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and message in one_line(err) and out == ""
    assert files_under(tmp_path) == before


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 written by save_pretrained: the valid folder the cases break one way each."""
    folder = tmp_path_factory.mktemp("gpt2") / "gpt2"
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0,
    )).save_pretrained(folder)
    return folder
