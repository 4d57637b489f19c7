# The two set-up commands of the README. Each builds (once) the cached environment, then:
#   make demo   runs the whole DAG on the embedded default (synthetic data, tiny models, CPU) with DVC
#   make test   runs the test suite (the same command CI runs through .ci/run)
SHELL := /bin/bash
VENV = $(shell scripts/env.sh)

.PHONY: demo test env
env:
	@echo "$(VENV)"

demo:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	  dvc repro && occreid where

test:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	  python -m pytest $(PYTEST_ARGS)
