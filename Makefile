# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv with plain pip when it is
# missing or older than pyproject.toml (pip takes torch from the machine's local wheel store).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := .cache/demo-data
DEMO_RESULTS := results/demo

.PHONY: demo test test-fast lint venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEMO_DATA)/list_attr_celeba.txt: | $(STAMP)
	$(BIN)/aal-sweep make-synthetic $(DEMO_DATA) --attributes 4 --images 2000 --size 32 32 --seed 0

demo: $(STAMP) $(DEMO_DATA)/list_attr_celeba.txt
	$(BIN)/aal-sweep run jobs/demo.yaml --results $(DEMO_RESULTS)
	@echo; echo "Pair matrix (validation accuracy, %; row = attribute measured, column = trained with):"
	@$(BIN)/aal-sweep matrix $(DEMO_RESULTS)
	@echo; echo "Partners (the paper's Table 3):"
	@$(BIN)/aal-sweep partners $(DEMO_RESULTS)
	@echo; echo "Variants (the paper's Table 1):"
	@$(BIN)/aal-sweep table $(DEMO_RESULTS)
	@echo
	@$(BIN)/aal-sweep report $(DEMO_RESULTS) --out $(DEMO_RESULTS)/report

# Three workers, a test file each at a time (module fixtures stay in one process): the end-to-end tests wait
# on Ray's start, Tune and subprocesses far more than they compute (measured with two workers: the two cores
# a third busy), so three share two cores best (2026-12-01: 10.9 min; two workers 11.3, four 12.0).
test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15

test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_RESULTS)
