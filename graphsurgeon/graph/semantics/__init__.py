"""The semantic layer: what each part of the captured graph means to the model's authors (Qt-free).

`dataflow` recognises projections and attention cores structurally; surgery, validation and the
views all read it from here (below them in the import direction).
"""
