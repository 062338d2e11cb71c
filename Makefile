# One command each: `make run` (set up + main job), `make test` (set up + tests). CPU installs pin torch 2.13.0.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint clean

$(STAMP): pyproject.toml CMakeLists.txt requirements/ci.txt $(wildcard csrc/*) $(wildcard kernels/*)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/ci.txt
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/warped-fast demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check warped_fast tests bench
	$(BIN)/ruff format --check warped_fast tests bench
	$(BIN)/clang-format --dry-run -Werror csrc/*.cpp csrc/*.h kernels/*.cu kernels/*.cuh

clean:
	rm -rf build $(VENV) bench/results
