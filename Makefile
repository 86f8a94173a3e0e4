# The course kit's commands. Each one creates .venv with everything it needs when
# it is missing or older than pyproject.toml/constraints.txt, then does its job.
#
#   make lab                 JupyterLab 4 on 127.0.0.1:$(PORT), opened on lectures/
#   make test [PYTEST_WORKERS=2] [PYTEST_ARGS=]   the whole test suite (what CI runs), on 2 workers
#   make release             regenerate assignments/ from solutions/ (nbgrader)
#   make grade SUBMISSIONS=<dir|zip> ASSIGNMENT=<name> OUT=<dir> [STUDENT=] [JOBS=] [UNSAFE=1] [ZYGOTE=0]
#              [DUEDATE=] [EXTENSIONS=<csv>] [LATE=none|zero|per_hour] [PER_HOUR=<points>]
#                            autograde a class, each submission in a bubblewrap sandbox
#   make formgrade OUT=<dir> Formgrader (JupyterLab + nbgrader) on a graded class, for written answers
#   make feedback OUT=<dir>  every student's HTML feedback again, manual scores and comments included
#   make export OUT=<dir> FORMAT=canvas|csv [ROSTER=<csv>]   the grades for a learning-management system
#   make validate NOTEBOOK=<path>   a student's check before hand-in
#   make lecture NB=lectures/01_gd_sgd.ipynb   re-execute one notebook in place
#   make bench               speed ratios (benchmarks/): PGD, APGD and Square vs torchattacks, IBP and CERTIFY vs a forward
#                            pass, a black-box query and a feature-collision step vs a forward(+backward), certified training
#                            step vs an SGD step, a GCG step vs its forward+backward floor, SmoothLLM vs one batched generation
#   make site                the course website in site/ (Sphinx + MyST-NB), from the stored outputs, offline

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888
LAB_ARGS ?=
SUBMISSIONS ?=
ASSIGNMENT ?=
OUT ?= grading_out
PYTEST_ARGS ?=
# make test's pytest-xdist workers: 2 fit the 2-core budget machine; auto: one per CPU;
# 0: none, the tests run in make's own pytest process (what --pdb needs)
PYTEST_WORKERS ?= 2
# Jupyter refuses to run as root unless told (containers, CI); a normal user gets nothing extra
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# the venv's programs (jupyter, nbgrader, alembic) first, without activating it
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# The committed notebooks keep trained models' figures, whose last digits move with the CPU's
# vector instructions (AVX2 and AVX-512 kernels sum in different orders). Tests and re-executions
# pin PyTorch, MKL and oneDNN to their AVX2 code paths, so the outputs reproduce on any x86-64
# CPU with AVX2 (tried: stored on an AVX2 EPYC, checked on an AVX-512 one).
PIN_CPU := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

.PHONY: lab test release grade formgrade feedback export validate lecture bench site venv constraints clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
		{ echo "error: Python 3.11 is required; found '$(PYTHON)' ($$($(PYTHON) --version 2>&1)). Install python3.11 or run 'make PYTHON=/path/to/python3.11 ...'."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	@touch $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.port_retries=0 \
		--ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/lectures $(ALLOW_ROOT) $(LAB_ARGS)

# -n $(PYTEST_WORKERS) with pyproject's --dist loadfile: each file (a notebook's cells, a module's
# fixtures) stays on one worker, in order
test: $(STAMP)
	$(PIN_CPU) $(PY) -m pytest -n $(PYTEST_WORKERS) tests $(wildcard lectures solutions) --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=300 $(PYTEST_ARGS)

release: $(STAMP)
	$(PY) -m course_lib.grading.release

grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" -a -n "$(ASSIGNMENT)" || \
		{ echo "usage: make grade SUBMISSIONS=<dir or zip> ASSIGNMENT=<name> OUT=<dir> [STUDENT=<id>] [JOBS=<n>] [UNSAFE=1] [ZYGOTE=0] [DUEDATE=<date>] [EXTENSIONS=<csv>] [LATE=none|zero|per_hour] [PER_HOUR=<points>]"; exit 2; }
	$(PY) -m course_lib.grading --submissions "$(SUBMISSIONS)" --assignment "$(ASSIGNMENT)" --out "$(OUT)" \
		$(if $(STUDENT),--student "$(STUDENT)") $(if $(JOBS),--jobs $(JOBS)) $(if $(filter 1,$(UNSAFE)),--unsafe) $(if $(filter 0,$(ZYGOTE)),--no-zygote) \
		$(if $(DUEDATE),--duedate "$(DUEDATE)") $(if $(EXTENSIONS),--extensions "$(EXTENSIONS)") \
		$(if $(LATE),--late "$(LATE)") $(if $(PER_HOUR),--penalty-per-hour "$(PER_HOUR)")

# Formgrader on a graded class: JupyterLab (as make lab starts it) with OUT as its root and course
formgrade: $(STAMP)
	@test -f "$(OUT)/nbgrader_config.py" -a -f "$(OUT)/gradebook.db" || \
		{ echo "usage: make formgrade OUT=<the OUT of make grade> [PORT=8888]"; exit 2; }
	cd "$(OUT)" && $(CURDIR)/$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --ServerApp.port_retries=0 \
		--ServerApp.root_dir=. --LabApp.default_url=/formgrader $(ALLOW_ROOT) $(LAB_ARGS)

feedback: $(STAMP)
	$(PY) -m course_lib.grading.feedback --out "$(OUT)"

FORMAT ?= canvas
export: $(STAMP)
	$(PY) -m course_lib.grading.export --out "$(OUT)" --format "$(FORMAT)" $(if $(ROSTER),--roster "$(ROSTER)")

validate: $(STAMP)
	@test -n "$(NOTEBOOK)" || { echo "usage: make validate NOTEBOOK=assignments/ps1_gd_sgd/gd_sgd.ipynb"; exit 2; }
	$(PY) -m course_lib.grading.validate "$(NOTEBOOK)"

# torchattacks is a benchmark-only reference; it pins requests~=2.25 (JupyterLab needs a newer
# one), so it is installed without its dependencies, which the venv already has.
TORCHATTACKS := torchattacks==3.5.1
bench: $(STAMP)
	$(PY) -m pip install --quiet --no-deps "$(TORCHATTACKS)"
	$(PY) benchmarks/attacks.py
	$(PY) benchmarks/certify.py
	$(PY) benchmarks/blackbox.py
	$(PY) benchmarks/feature_collision.py
	$(PY) benchmarks/certified_training.py
	$(PY) benchmarks/gcg.py
	$(PY) benchmarks/smoothllm.py --model-from course_lib.chat_zoo:load

lecture: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make lecture NB=lectures/01_gd_sgd.ipynb"; exit 2; }
	$(PIN_CPU) $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace "$(NB)"

# the website: lectures with their stored outputs, released assignments, the API; nothing is executed
site: $(STAMP)
	$(PY) tools/site/build.py --out site

constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -vi '^course.lib'; } > constraints.tmp
	mv constraints.tmp constraints.txt
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache gradebook.db .nbgrader.log grading_out
