"""`graphsurgeon lora`: the targets table, budget and validation; bad values are one sentence and exit 2."""

import json

import pytest

from graphsurgeon.cli import main


def test_lora_command_json(capsys, tmp_path):
    code = main(["lora", "tiny-gpt2", "--targets", "q,v", "--rank", "8", "--alpha", "16", "--dropout", "0.05",
                 "--layers", "all", "--json", "--recipe-out", str(tmp_path / "r.json")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["validation"] == []
    assert [(r["layer"], r["role"], r["tensor"], r["shape"], r["input_shape"]) for r in data["targets"]][:2] == [
        (0, "q", "transformer.h.0.attn.c_attn[0:64]", "[batch, seq, 64]", "[batch, seq, 64]"),
        (0, "v", "transformer.h.0.attn.c_attn[128:192]", "[batch, seq, 64]", "[batch, seq, 64]")]
    assert data["budget"]["trainable"] == 4 * 2 * 64 * 8  # 2 layers × (q, v) × (A + B)
    assert json.loads((tmp_path / "r.json").read_text())["steps"][0]["role"] == "q"


def test_lora_command_text(capsys):
    assert main(["lora", "tiny-bert", "--targets", "q,v", "--rank", "4", "--layers", "0", "--rslora"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layer.0.attention.self.query" in out and "scaling 8" in out
    assert "trainable params: 1,024 ||" in out and "validation: ok" in out


@pytest.mark.parametrize("argv, message", [
    (["--rank", "0"], "--rank 0 is not allowed"),
    (["--targets", "q,zz"], "unknown target 'zz'"),
    (["--layers", "0-5"], "out of range: this model has layers 0-1"),
    (["--rank", "65"], "--rank 65 is not allowed here: rank r = 65 is too large for "
                       "encoder.layer.0.attention.self.query (layer 0, 'q'): r must be between 1 and min(in 64, out 64) "
                       "= 64; give --rank 64 or less."),
    (["--dropout", "1.5"], "--dropout 1.5 is not allowed"),
])
def test_bad_values_exit_2_with_one_sentence(capsys, argv, message):
    assert main(["lora", "tiny-bert", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
