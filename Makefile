# Two commands on a fresh machine:  `make run` (set up, open the editor) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run test bench preset-trees clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# The CPU build of torch, pinned: a bare `torch` could pull several GB of CUDA packages.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[test]"
	# the default model's views, cached, so the first `make run` paints GPT-2 at once (capture continues in the window)
	$(VENV)/bin/graphsurgeon edit --prepare
	touch $@

run: setup
	$(VENV)/bin/graphsurgeon $(ARGS)

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# the presets' module trees (assets/presets/modules), painted before torch is imported; tests/test_preset_trees.py
# fails when one is stale (a preset's config or transformers changed)
preset-trees: setup
	$(PY) -m graphsurgeon.capture.preset_trees

clean:
	rm -rf $(VENV) build *.egg-info
