# neuronb: the two commands of the README, and a few helpers.
#   make sweep   set up from nothing, then run the main papermill sweep (the LFP experiment matrix) on simulated data
#   make test    set up from nothing, then run the whole test suite (hygiene, notebooks, pytest)
# Running either again reuses the environment: the venv is rebuilt only when its inputs change.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neuronb-installed
MAIN_SPEC ?= papermill_runs/lfp_cpu.yaml
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: sweep test docs readme export clean-sweeps browser system venv hooks screenshots

venv: $(STAMP)

# One pinned install: constraints.txt holds the exact versions of everything.
$(STAMP): constraints.txt settings.ini setup.py tools/install_hooks.py
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: neuronb needs Python 3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt "pip==25.3"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (neuronb)" >/dev/null
	$(PY) tools/install_hooks.py
	@touch $(STAMP)
	@echo "environment ready: $(VENV) ($$(du -sh $(VENV) | cut -f1))"

# Jupyter cleans notebooks on save; git cleans staged notebooks before a commit (make venv runs this too).
hooks: $(STAMP)
	$(PY) tools/install_hooks.py

sweep: $(STAMP)
	$(VENV)/bin/neuronb sweep run $(MAIN_SPEC)

# Headless Chromium and its driver for the docs-site browser test.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# System programs some tests start: SLURM and munge (a one-node cluster on localhost, for the SLURM sweep backend)
# and espeak-ng (speech synthesised offline for the audio encoding chapter).
system:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v espeak-ng >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge espeak-ng >/dev/null; }

test: $(STAMP) browser system
	bash tools/check_hygiene.sh
	$(VENV)/bin/nbdev_test --n_workers 2 --timing
	$(PY) -m pytest tests --durations=25

docs: $(STAMP)
	$(PY) tools/build_docs.py

# Screenshots of the built site (index, an API page, an experiment page) for review, outside the repository:
#   make docs screenshots SHOTS=/tmp/neuronb-shots
SHOTS ?= $(TMPDIR)/neuronb-screenshots
screenshots: $(STAMP) browser
	$(PY) tools/screenshots.py $(or $(SHOTS),/tmp/neuronb-screenshots)

readme: $(STAMP)
	$(PY) tools/build_docs.py --readme-only

export: $(STAMP)
	$(VENV)/bin/nbdev_export && $(VENV)/bin/nbdev_clean && $(PY) tools/build_docs.py --readme-only
