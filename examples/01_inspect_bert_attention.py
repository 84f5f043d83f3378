"""Example 1: capture BERT and read its self-attention layer by layer.

Run:  .venv/bin/python examples/01_inspect_bert_attention.py [--model bert-base-uncased]

Prints the composite hierarchy two levels deep, then the shape table of
encoder.layer.0.attention.self: query/key/value projections, the reshape into heads, attention.
"""

import argparse

from graphsurgeon.capture import capture


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-bert", help="a preset or a local BERT folder (default tiny-bert)")
    args = parser.parse_args()

    cm = capture(args.model, meta=True)  # architecture only: no weight memory needed to read shapes
    blocks = cm.blocks()
    print(f"{cm.model_class}: {blocks.param_count(''):,} parameters ({cm.weights_note})")
    for path in blocks.paths():
        depth = len(blocks.breadcrumbs(path)) - 1
        if depth <= 2:
            print("  " * depth + f"{blocks.label(path, blocks.parent(path) or '') or cm.model_class}  {blocks.classes[path]}")

    view = blocks.view("encoder.layer.0.attention.self")
    print("\nencoder.layer.0.attention.self:")
    for row in view.variables:
        print(f"  {row.name:<30} {row.producer:<32} {row.shape:<22} {row.dtype}")
    query = view.find("query")
    print(f"\nquery reads {query.inputs[0].meta.shape_text} and writes {query.outputs[0].meta.shape_text}; "
          f"{query.param_count:,} parameters")


if __name__ == "__main__":
    main()
