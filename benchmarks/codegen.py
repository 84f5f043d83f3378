"""Code generator benchmark: what model.py looks like per architecture, and how fast it is written.

Per architecture of the test suite and some held out of it (tiny configs, built here): model.py lines (all, and
the model's own code: its classes and functions, without the fixed helpers, the EXPECTED table and load_model),
the Hugging Face modeling file's lines, `torch.ops.aten` calls (goal 0), classes, the largest difference from
the Hugging Face model on a padded batch, and the time to generate the text for the real GPT-2 / BERT-base
architectures (meta capture: no weights) — median of 5, after an edit (cache cleared).

Run: .venv/bin/python benchmarks/codegen.py [--only gpt2,llama]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers as tf

from graphsurgeon.capture import capture
from graphsurgeon.export import export_folder
from graphsurgeon.export.codegen import aten_calls, generate

S = dict(vocab_size=101)
ARCHS = {  # suite first, then held out
    "bert": lambda: tf.BertModel(tf.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                               intermediate_size=128, max_position_embeddings=64, **S)),
    "roberta": lambda: tf.RobertaModel(tf.RobertaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                        intermediate_size=128, pad_token_id=1,
                                                        max_position_embeddings=70, **S)),
    "distilbert": lambda: tf.DistilBertModel(tf.DistilBertConfig(n_layers=2, dim=64, n_heads=4, hidden_dim=128, **S)),
    "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, **S)),
    "bigcode": lambda: tf.GPTBigCodeForCausalLM(tf.GPTBigCodeConfig(n_layer=2, n_embd=64, n_head=16, multi_query=True,
                                                                    n_positions=64, **S)),
    "opt": lambda: tf.OPTForCausalLM(tf.OPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                  ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=64, **S)),
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                        num_key_value_heads=2, intermediate_size=128,
                                                        max_position_embeddings=64, **S)),
    "mistral*": lambda: tf.MistralForCausalLM(tf.MistralConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
        max_position_embeddings=64, **S)),
    "phi*": lambda: tf.PhiForCausalLM(tf.PhiConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                   intermediate_size=128, max_position_embeddings=64, **S)),
    "gpt_neox*": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, **S)),
    "falcon*": lambda: tf.FalconForCausalLM(tf.FalconConfig(num_hidden_layers=2, hidden_size=64,
                                                            num_attention_heads=4, **S)),
    "albert*": lambda: tf.AlbertModel(tf.AlbertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                                      intermediate_size=128, embedding_size=32,
                                                      max_position_embeddings=64, **S)),
    "t5-encoder*": lambda: tf.T5EncoderModel(tf.T5Config(num_layers=2, d_model=64, num_heads=4, d_kv=16, d_ff=128,
                                                         **S)),
    "deberta-v2*": lambda: tf.DebertaV2Model(tf.DebertaV2Config(num_hidden_layers=2, hidden_size=64,
                                                                num_attention_heads=4, intermediate_size=128,
                                                                max_position_embeddings=64, **S)),
}


def load(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, folder / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load_model(str(folder)).eval()


def own_code_lines(text: str) -> int:
    """Lines of the model's classes and functions (the text from the first generated def/class to `Model = `),
    without the helper layers model.py always carries (Conv1D, LoRA…)."""
    body = text[: text.index("\nModel = ")]
    starts = [m.start() for m in re.finditer(r"^(?:def|class) (\w+)", body, re.M)
              if m.group(1) not in ("Conv1D", "LoRA", "LoRALinear", "LoRAConv1D", "grouped_mm")]
    return len([ln for ln in body[starts[0]:].splitlines() if ln.strip()]) if starts else 0


def arch_row(arch: str, make) -> tuple:
    torch.manual_seed(0)
    model = make().eval()
    cm = capture(model)
    folder = Path(tempfile.mkdtemp(prefix="gs-codegen-")) / "out"
    export_folder(cm, folder)
    text = (folder / "model.py").read_text()
    ours = load(folder, f"bench_{abs(hash(arch))}")
    x = {"input_ids": torch.randint(2, 101, (3, 7), generator=torch.Generator().manual_seed(5))}
    if "attention_mask" in cm.input_names:
        x["attention_mask"] = torch.ones(3, 7, dtype=torch.long)
        x["attention_mask"][0, :2] = 0
    with torch.no_grad():
        got, want = ours(**x), model(**x)
    diff = max((got[k] - getattr(want, k)).abs().max().item() for k in cm.output_names
               if getattr(want, k, None) is not None)
    hf_file = Path(inspect.getsourcefile(type(model)))
    classes = re.findall(r"^class (\w+)\(nn\.Module\)", text, re.M)
    return (arch, len(text.splitlines()), own_code_lines(text), len(hf_file.read_text().splitlines()),
            aten_calls(text), len(classes), diff)


def generate_ms(name: str) -> float:
    cm = capture(name, meta=True)
    times = []
    for _ in range(5):
        cm.touch()
        t0 = time.perf_counter()
        generate(cm)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", help="comma-separated architectures")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(ARCHS)
    print("* held out of the test suite")
    print(f"{'arch':<13}{'model.py':>9}{'own code':>9}{'HF file':>9}{'aten':>6}{'classes':>8}{'max |Δ| vs HF':>15}")
    for arch in names:
        try:
            a, total, own, hf, aten, classes, diff = arch_row(arch, ARCHS[arch])
            print(f"{a:<13}{total:>9}{own:>9}{hf:>9}{aten:>6}{classes:>8}{diff:>15.1e}")
        except Exception as err:  # noqa: BLE001 - a row that fails says why
            print(f"{arch:<13} failed: {type(err).__name__}: {str(err)[:120]}")
    print()
    for name in ("gpt2", "bert-base-uncased"):
        print(f"generate model.py for {name} (meta, after an edit): {generate_ms(name):.0f} ms (median of 5)")


if __name__ == "__main__":
    main()
