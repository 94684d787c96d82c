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

.PHONY: setup run test clean report quickstart-report

setup: $(STAMP)

# The stamp depends on pyproject.toml, so a second `make setup` is a no-op until dependencies change.
# torch/torchvision are pinned first because an unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/bench run protocols/quickstart.yaml

test: setup
	$(PY) -m pytest -q

# `make report P=mnist-zoo`: run protocols/$(P).yaml and copy its comparison table and every entry's
# sample grid into reports/$(P)/ (committed). The copies come from the run folder `bench run` just wrote.
P ?= quickstart
report: setup
	$(VENV)/bin/bench run protocols/$(P).yaml
	rm -rf reports/$(P) && mkdir -p reports/$(P)
	dir=$$(ls -td runs/$$(sed -n 's/^name: *//p' protocols/$(P).yaml)-*/ | head -n 1); \
	cp "$$dir/comparison.md" "$$dir/comparison.csv" reports/$(P)/ && \
	for g in "$$dir"/*/samples.png; do e=$$(basename $$(dirname "$$g")); cp "$$g" "reports/$(P)/$$e-samples.png"; done

quickstart-report:
	$(MAKE) report P=quickstart

clean:
	rm -rf runs mlflow.db mlruns .pytest_cache
