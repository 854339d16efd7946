# Two commands set everything up on a fresh machine:
#   make demo   install into .venv and run the main job on embedded defaults (SQLite, bundled broker)
#   make test   install the test dependencies into .venv and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	# obp (Open Bandit Pipeline), the reference our OPE estimators are checked against: 0.4.1 is the
	# last release for Python >= 3.10; --no-deps because it pins torch, which its numpy estimators never call
	$(BIN)/pip install --quiet --no-deps 'obp==0.4.1'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/banditloop demo --learner linucb --seconds 60 --rate 150 --out out --db sqlite:///banditloop.db

test: install-test
	$(BIN)/ruff check banditloop core operators simulators pipeline serving evaluation tests benchmarks
	$(MAKE) --no-print-directory typecheck
	$(BIN)/python -m pytest -q -ra

# mypy over the package as installed: banditloop/ plus the design-card folders, linked into one tree
typecheck: install-test
	@rm -rf build/typecheck && mkdir -p build/typecheck/banditloop
	@for f in banditloop/*.py banditloop/commands banditloop/demo; do ln -s "$$PWD/$$f" build/typecheck/banditloop/; done
	@for d in core operators simulators pipeline serving evaluation; do ln -s "$$PWD/$$d" build/typecheck/banditloop/$$d; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p banditloop

bench: install-test
	$(BIN)/python benchmarks/closed_loop.py
	$(BIN)/python benchmarks/learn_from_log.py
	$(BIN)/python benchmarks/regret.py --quick

clean:
	rm -rf $(VENV) out banditloop.db *.egg-info build
