# The set-up commands of the README. Each builds (once) the cached environment, then:
#   make demo        runs the fast demo (params.yaml profile `fast`: every method, DPM Table 3, the DPM++
#                    ablation; synthetic data, tiny models, CPU) as one DAG with DVC
#   make demo-full   the whole demo (profile `full`: + seed replicates, alpha1/alpha2 sweeps, DPM Table 4,
#                    DPEFormer Tables III and X);
#                    after `make demo` it runs only the added experiments
#   make test        runs the test suite (the same command CI runs through .ci/run)
# A demo target sets params.yaml's `profile` line and re-renders dvc.yaml (`occreid profile NAME`) first.
SHELL := /bin/bash
VENV = $(shell scripts/env.sh)

.PHONY: demo demo-full test env
env:
	@echo "$(VENV)"

demo:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	  occreid profile fast && dvc repro && occreid where

demo-full:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	  occreid profile full && dvc repro && occreid where

test:
	@venv="$(VENV)"; export PATH="$$venv/bin:$$PATH"; \
	  python -m pytest $(PYTEST_ARGS)
