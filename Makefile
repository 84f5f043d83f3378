# Two commands on a fresh machine:  `make run` (set up, open the editor) and `make test`.
# Both install exactly what requirements.lock names (hashed); `make lock` writes it again on purpose,
# `make test-latest` tries the newest versions pyproject.toml allows in a second environment.
VENV ?= .venv
LATEST ?= .venv-latest
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
PIP_COMPILE := pip-compile -q --extra test --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: setup run system-check test test-latest lock bench preset-trees clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	# The lock, hashed; torch is its CPU build (torch-cpu.in), so no CUDA packages are pulled.
	$(VENV)/bin/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	# the default model's views, cached, so the first `make run` paints GPT-2 at once (capture continues in the window)
	$(VENV)/bin/graphsurgeon edit --prepare
	touch $@

# The editor needs a few system libraries for a real window on Linux; say which before building anything.
system-check:
	@python3 graphsurgeon/ui/platform_check.py --before-setup $(ARGS)

run: system-check setup
	$(VENV)/bin/graphsurgeon $(ARGS)

# a crash of pytest itself (a signal, exit >= 128) names the test that was running
test: setup
	QT_QPA_PLATFORM=offscreen GRAPHSURGEON_LAST_TEST=$(VENV)/last-test $(PY) -m pytest -q $(PYTEST_ARGS) || { s=$$?; \
	  [ $$s -lt 128 ] || echo "pytest died of signal $$((s - 128)) while running $$(cat $(VENV)/last-test)"; exit $$s; }

# The newest versions pyproject.toml allows (torch stays the pinned CPU build), in $(LATEST), then the suite.
test-latest:
	python3 -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c torch-cpu.in -e ".[test]"
	@$(LATEST)/bin/python -c "import importlib.metadata as m; print('newest allowed:', ', '.join(p + ' ' + m.version(p) for p in ('transformers', 'peft', 'safetensors', 'PySide6-Essentials', 'torch')))"
	QT_QPA_PLATFORM=offscreen $(LATEST)/bin/python -m pytest -q $(PYTEST_ARGS)

# Write requirements.lock again from pyproject.toml and torch-cpu.in (pip-tools in a throwaway venv).
lock:
	python3 -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install -q pip-tools
	$(VENV)-lock/bin/$(PIP_COMPILE) -o $(LOCK) pyproject.toml torch-cpu.in
	rm -rf $(VENV)-lock

bench: setup
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

# the presets' module trees (assets/presets/modules), painted before torch is imported; tests/test_preset_trees.py
# fails when one is stale (a preset's config or transformers changed)
preset-trees: setup
	$(PY) -m graphsurgeon.capture.preset_trees

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info
