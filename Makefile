# Front door: `make run` (quickstart protocol end to end) and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.ganbench-installed
# Tests and the quickstart read real data from ../shared/data when it is there (never copied into the repo).
SHARED_DATA := $(wildcard ../shared/data)
ifneq ($(SHARED_DATA),)
export BENCH_DATA ?= $(abspath $(SHARED_DATA))
endif
# Quiet MLflow's chatter about git and env managers; it still records everything.
export GIT_PYTHON_REFRESH ?= quiet

.PHONY: setup run test test-default-kernels clean report quickstart-report

setup: $(STAMP)
	@# Headless Chromium for the report browser test: installed from Debian only when missing and allowed
	@# (root with apt-get, BENCH_NO_APT unset); tried once per venv; never fails setup (the test then skips).
	@if ! command -v chromium >/dev/null 2>&1 && [ ! -e $(VENV)/.chromium-tried ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "$$BENCH_NO_APT" ]; then \
	    echo "installing chromium (apt-get) for the report browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: tests/test_report_browser.py will be skipped"; \
	  else echo "chromium not installed (needs root and apt-get): tests/test_report_browser.py will be skipped"; fi; \
	  touch $(VENV)/.chromium-tried; \
	fi

# The stamp depends on pyproject.toml, so a second `make setup` is a no-op until dependencies change.
# torch/torchvision are pinned first because an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/bench run protocols/quickstart.yaml

# The suite's files run on TEST_WORKERS processes (pytest-xdist), one file (or one group of files that share
# runs) per process at a time, the slowest first (tests/conftest.py); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# The suite as it runs on an x86 CPU without AVX2: torch's default kernels round differently (init draws, the
# judges' arithmetic), and the fingerprints, pinned pixels and fixed-checkpoint scores must hold there too
# (docs/results.md). A check for changes that touch decoding, seeding or scoring; CI runs `make test`.
test-default-kernels: setup
	ATEN_CPU_CAPABILITY=default $(MAKE) test

# `make report P=mnist-zoo`: run protocols/$(P).yaml, then write reports/<protocol name>/ from the MLflow
# store with `bench report` (committed).
P ?= quickstart
report: setup
	$(VENV)/bin/bench run protocols/$(P).yaml
	$(VENV)/bin/bench report protocols/$(P).yaml

quickstart-report:
	$(MAKE) report P=quickstart

clean:
	rm -rf runs mlflow.db mlruns .pytest_cache
