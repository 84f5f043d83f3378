"""Each bad input gets one clear sentence and exit status 2, never a traceback (table-driven)."""

import json

import pytest
import torch
import transformers

from graphsurgeon.capture import capture
from graphsurgeon.cli import main
from graphsurgeon.errors import CaptureError


def _bert_folder(path):
    transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50,
        max_position_embeddings=32)).save_pretrained(path)
    return path


def no_such_path(tmp_path):
    return [str(tmp_path / "missing-model")]


def no_config(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    return [str(tmp_path)]


def unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-model", "architectures": ["Foo"]}))
    return [str(tmp_path)]


def malformed_config(tmp_path):
    (tmp_path / "config.json").write_text("{ this is not json")
    return [str(tmp_path)]


def truncated_safetensors(tmp_path):
    folder = _bert_folder(tmp_path / "bert")
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return [str(folder)]


def garbage_safetensors(tmp_path):
    folder = _bert_folder(tmp_path / "bert")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    return [str(folder)]


def pickle_only(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    return [str(tmp_path)]


def hub_id_not_cached(tmp_path):
    return ["some-org/some-model-that-is-not-cached"]


def unknown_composite(tmp_path):
    return ["tiny-bert", "--path", "encoder.layer.0.attention.slef"]


CASES = [  # (make arguments, text the one-line error must contain)
    (no_such_path, "no such file or folder"),
    (no_config, "has no config.json"),
    (unknown_model_type, "unknown model_type 'not-a-model'"),
    (malformed_config, "is not valid JSON"),
    (truncated_safetensors, "corrupt or truncated"),
    (garbage_safetensors, "corrupt or truncated"),
    (pickle_only, "never loads"),
    (hub_id_not_cached, "HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE to download it"),
    (unknown_composite, "did you mean 'encoder.layer.0.attention.self'"),
]


@pytest.mark.parametrize("make_args,expected", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_gets_one_sentence(make_args, expected, tmp_path, capsys):
    args = make_args(tmp_path)
    capsys.readouterr()  # drop what making the bad input printed
    code = main(["inspect", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_uncapturable_model_names_the_place_and_why():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = self.proj(x)
            if y.sum() > 0:  # a branch on tensor values: torch.export cannot capture it
                return y * 2
            return y

    with pytest.raises(CaptureError) as info:
        capture(DataDependent(), example_inputs={"x": torch.randn(2, 4)})
    msg = str(info.value)
    assert "test_bad_input.py" in msg and "forward" in msg
    assert "data-dependent control flow" in msg
    assert "--eager-attention" not in msg  # eager attention cannot help a branch on tensor values


def test_inspect_ends_the_process_at_once_after_its_output_errors_still_return(monkeypatch, capsys):
    """`graphsurgeon inspect` as a process (exiting=True) leaves through os._exit once its table is printed and
    flushed (no interpreter teardown); a refusal returns its status as before (one sentence, exit 2)."""
    from graphsurgeon import cli

    ended = []
    monkeypatch.setattr(cli.os, "_exit", lambda status: ended.append((status, capsys.readouterr().out)))
    assert cli._main(["inspect", "tiny-gpt2", "--meta"], exiting=True) == 0
    assert len(ended) == 1 and ended[0][0] == 0 and "GPT2LMHeadModel" in ended[0][1]  # printed before it ended
    assert cli._main(["inspect", ""], exiting=True) == 2 and len(ended) == 1
    assert "the model name is empty" in capsys.readouterr().err
