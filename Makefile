# Build, test and refresh the course.  `make help` lists the targets.
#
# Everything runs inside .venv, which the first target that needs it creates from
# pyproject.toml's extras pinned by requirements/constraints.txt.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV        := .venv
BIN         := $(VENV)/bin
PY          := $(BIN)/python
STAMP       := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
SANITIZE    := tests/nbval_sanitize.cfg
STRICT_LOG  := _build/strict-build.log
BOOTSTRAP_PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3)

# Chapter sources for `make sync`; `make sync NB=book/01_x.md` refreshes one notebook.
NB ?= $(wildcard book/[0-9][0-9]_*.md)

# Every notebook run (sync, nbval, tests) sees the same quiet, CPU-only, seeded environment,
# so that re-running a notebook reproduces its stored outputs.
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0
export PYTHONHASHSEED := 0
export CUDA_VISIBLE_DEVICES :=

.PHONY: help setup book test test-unit test-notebooks test-portable test-portable-ci test-book test-minimum browser bench editions release sync constraints clean distclean
# The checks of `make test` run one after the other, even under make -j.
.NOTPARALLEL:

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "%-16s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the pinned environment (only when needed)

# Re-run when the dependency declarations change; the stamp records a finished install.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[all]"
	@touch $@

book: $(STAMP) ## build the HTML book into _build/html
	$(BIN)/jupyter-book build .
	@echo "Book: $(abspath _build/html/index.html)"

test: test-unit test-notebooks test-book ## all three checks below, in order; stops at the first failure
	@echo "All checks passed."

test-unit: $(STAMP) ## pytest tests/ (package, project and notebook-pair checks)
	@echo "== 1/3 pytest tests/"
	$(PY) -m pytest tests/ --ignore=tests/rendered

NBVAL := $(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with $(SANITIZE) book/*.ipynb
# What the working tree looks like to git: the notebooks must leave it exactly as it was.
TREE_STATE := { git status --porcelain --untracked-files=all; git diff --binary; } 2>/dev/null | sha1sum

# nbval runs offline where it can: in a new network namespace (root, or unprivileged user
# namespaces), which has only a loopback interface, so any download in a notebook fails the run.
test-notebooks: $(STAMP) ## nbval: re-execute every notebook offline and compare with its stored outputs
	@echo "== 2/3 nbval over book/*.ipynb"
	@before=$$($(TREE_STATE)); \
	if unshare -n true 2>/dev/null; then \
	  echo "(network blocked: running in a network namespace with only loopback)"; \
	  unshare -n sh -c 'ip link set lo up && exec $(NBVAL)'; \
	elif unshare -rn true 2>/dev/null; then \
	  echo "(network blocked: running in a user and network namespace with only loopback)"; \
	  unshare -rn sh -c 'ip link set lo up && exec $(NBVAL)'; \
	else \
	  echo "(cannot create a network namespace here: nbval runs with the network available)"; \
	  $(NBVAL); \
	fi; \
	after=$$($(TREE_STATE)); \
	if [ "$$before" != "$$after" ]; then \
	  echo "The notebooks changed the working tree (they may write only under a temporary directory):"; \
	  git status --short; exit 1; fi

# The numerical environments a reader's machine may present, one per word (commas between the
# variables of one environment). Each changes which kernels compute the same numbers, and so
# their rounding: one thread; PyTorch's portable kernels instead of AVX2 or AVX-512 ones;
# NumPy's OpenBLAS with another CPU's kernels; TensorFlow's oneDNN kernels, on as on Colab, also
# capped at SSE4.1; MKL (PyTorch's BLAS) capped at SSE4.2; and an AVX-512 machine held to AVX2
# (the same as oneDNN on where the CPU has no AVX-512). `make test-portable` runs nbval under
# each, and every stored output must match: a printed digit that moves fails it.
PORTABLE_ENVS := \
  OMP_NUM_THREADS=1 \
  ATEN_CPU_CAPABILITY=default \
  OPENBLAS_CORETYPE=Prescott \
  TF_ENABLE_ONEDNN_OPTS=1 \
  TF_ENABLE_ONEDNN_OPTS=1,ONEDNN_MAX_CPU_ISA=SSE41 \
  MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
  TF_ENABLE_ONEDNN_OPTS=1,ONEDNN_MAX_CPU_ISA=AVX2,ATEN_CPU_CAPABILITY=avx2
# All of them at once, for CI: one more nbval run that changes every kernel family together.
PORTABLE_CI := OMP_NUM_THREADS=1,ATEN_CPU_CAPABILITY=default,OPENBLAS_CORETYPE=Prescott,TF_ENABLE_ONEDNN_OPTS=1,ONEDNN_MAX_CPU_ISA=SSE41,MKL_ENABLE_INSTRUCTIONS=SSE4_2
PORTABLE ?= $(PORTABLE_ENVS)

test-portable: $(STAMP) ## nbval under each numerical environment of PORTABLE_ENVS (PORTABLE="A=1,B=2 C=3" for others)
	@failed=; for vars in $(PORTABLE); do \
	  echo "== nbval with $${vars//,/ }"; start=$$(date +%s); \
	  if env $${vars//,/ } $(NBVAL); then echo "== passed in $$(( $$(date +%s) - start )) s"; \
	  else failed="$$failed $$vars"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "Stored outputs not reproduced under:$$failed"; exit 1; fi
	@echo "Every stored output reproduced under every environment."

test-portable-ci: $(STAMP) ## nbval once with every environment of test-portable at the same time (what CI adds)
	@$(MAKE) --no-print-directory test-portable PORTABLE=$(PORTABLE_CI)

test-book: $(STAMP) ## build the book from scratch with warnings as errors
	@echo "== 3/3 jupyter-book build, warnings as errors"
	@mkdir -p _build
	$(BIN)/jupyter-book build . --all -W -n --keep-going 2>&1 | tee $(STRICT_LOG)
	@# Belt and braces: whatever jupyter-book's exit status, any warning line in the log fails.
	@if grep -nE '(WARNING|ERROR|CRITICAL)' $(STRICT_LOG); then \
	  echo "Book build reported the problems above (full log: $(STRICT_LOG))"; exit 1; fi
	@echo "== the rendered book in headless Chromium (screenshots in _build/screenshots)"
	@$(MAKE) --no-print-directory browser
	$(PY) -m pytest tests/rendered

# The declared minimum versions (requirements/minimum.txt) in their own environment, .venv-minimum:
# every test file (tests/rendered, the browser test of the built HTML, belongs to test-book), then
# every chapter executed without comparing digits (other versions round differently), with every
# check in it still required to pass, the version-keyed ones included. A test that needs a newer
# version says so with @pytest.mark.needs_version(package, version, reason=...), a test of the
# pinned environment itself with @pytest.mark.pinned_environment(reason=...); both are skipped
# with their reason, listed in the summary (-rfEs). The first run downloads about 3 GB
# (PyTorch 2.2's PyPI wheel is a CUDA build; it runs on the CPU).
MIN_VENV  := .venv-minimum
MIN_STAMP := $(MIN_VENV)/.installed
test-minimum: $(MIN_STAMP) ## every test file and every chapter on the oldest supported TensorFlow, Keras and PyTorch
	@echo "== pytest tests/ on $$($(MIN_VENV)/bin/python -c 'from companion.versions import _installed_version as v; print(*(f"{p} {v(p)}" for p in ("keras", "tensorflow", "torch", "numpy")), sep=", ")')"
	$(MIN_VENV)/bin/python -m pytest -rfEs tests/ --ignore=tests/rendered
	@echo "== every chapter, its checks required, its digits not compared"
	$(MIN_VENV)/bin/python -m pytest --nbval-lax --nbval-current-env book/[0-9][0-9]_*.ipynb

$(MIN_STAMP): requirements/minimum.txt pyproject.toml
	@test -x $(MIN_VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install --quiet -r requirements/minimum.txt -e ".[data,book,test]"
	@touch $@

# The Colab and student editions on Colab's own versions (requirements/colab.txt, which says
# where the list comes from), in .venv-colab on the Python Colab uses (3.13, from pyenv). The
# companion is installed as the setup cell installs it: `pip install "companion @ git+URL"`,
# URL a git snapshot of the working tree. Not part of `make test`: the first run downloads
# about 3 GB (TensorFlow, PyTorch) into a 7 GB environment.
.PHONY: test-colab
COLAB_VENV   := .venv-colab
COLAB_PY     := $(COLAB_VENV)/bin/python
COLAB_STAMP  := $(COLAB_VENV)/.installed
# The first Python 3.13 that runs (a pyenv shim may exist without selecting a version).
COLAB_PYTHON := $(shell for p in $$(command -v python3.13) $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	  "$$p" -c "" 2>/dev/null && { echo "$$p"; break; }; done)
test-colab: $(COLAB_STAMP) $(STAMP) ## run every Colab and student edition on Colab's versions; compare numbers with the book
	@folders=$$($(PY) -c 'import sys; sys.path.insert(0, "tools"); import make_editions as m; print(m.EDITIONS, m.STUDENT_EDITIONS)'); \
	set -- $$folders; \
	$(COLAB_PY) tools/colab_check.py --install --editions "$$1" --students "$$2"

$(COLAB_STAMP): requirements/colab.txt
	@if [ -z "$(COLAB_PYTHON)" ]; then \
	  echo "test-colab needs Python 3.13, Colab's Python: install it (e.g. pyenv install 3.13) and put"; \
	  echo "python3.13 on PATH. Stopping: another Python would not test what Colab runs."; exit 1; fi
	@test -x $(COLAB_PY) || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_PY) -m pip install --quiet -r requirements/colab.txt
	@touch $@

bench: $(STAMP) ## time the reference loops against fit / a plain loop, the import, each notebook
	$(PY) tools/bench.py

# The browser test needs Chromium and its driver, from Debian's packages. As root (CI) they are
# installed here; otherwise install them yourself, or the browser test is skipped and says so.
browser: ## install Chromium and chromedriver for the browser test (Debian/Ubuntu, as root)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing chromium and chromium-driver with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "Chromium is not installed and cannot be installed here: the browser test will be skipped"; fi

# The Colab editions (colab/book/) and student editions (colab/exercises/) of the chapters, from
# the executed notebooks and _config.yml; REPOSITORY=https://github.com/OWNER/NAME first rewrites
# repository.url and html.baseurl (its GitHub Pages site) in _config.yml, and CITATION.cff (a
# fork), so setup cells, links, launch buttons and the published book's address follow it.
editions: $(STAMP) ## regenerate colab/ (the Colab and student editions); REPOSITORY=URL retargets a fork
	$(PY) tools/make_editions.py $(if $(REPOSITORY),--repository $(REPOSITORY))

# An edition of the course (CHANGELOG.md): VERSION=YYYY.N written everywhere, colab/ regenerated
# to install the tag vYYYY.N, a commit, the editions' tests, then the annotated tag on that
# commit (tools/release.py). Run it on a clean, up-to-date main; then git push origin main vYYYY.N.
release: $(STAMP) ## VERSION=2026.2: release an edition (version everywhere, colab/, commit, tag v2026.2)
	@test -n "$(VERSION)" || { echo "Usage: make release VERSION=YYYY.N (see CHANGELOG.md)"; exit 1; }
	$(PY) tools/release.py prepare $(VERSION)
	$(PY) -m pytest -q tests/test_editions.py
	$(PY) tools/release.py tag

sync: $(STAMP) ## regenerate book/NN_*.ipynb from the .md and execute it (NB=book/01_x.md for one)
	@test -n "$(strip $(NB))" || { echo "No notebook sources to sync"; exit 1; }
	$(PY) tools/sync_notebooks.py $(NB)
	$(PY) tools/make_editions.py

constraints: ## re-pin requirements/constraints.txt from what .venv has installed
	@test -x $(PY) || { echo "Create .venv first (make setup)"; exit 1; }
	@{ echo "# Exact versions of everything pyproject.toml's extras install; used as pip -c."; \
	   echo "# Generated by 'make constraints' (pip freeze of .venv, local tags such as +cpu dropped)."; \
	   $(PY) -m pip freeze --exclude-editable | sed -E 's/\+[[:alnum:].]+$$//'; \
	 } > $(CONSTRAINTS).tmp
	@mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@echo "Wrote $(CONSTRAINTS)"

clean: ## remove the built book and caches (keeps .venv)
	rm -rf _build .jupyter_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) -print0 | xargs -0 rm -rf

distclean: clean ## also remove .venv (and .venv-minimum)
	rm -rf $(VENV) $(MIN_VENV)
