# photosearch: every target sets up what it needs (a virtualenv in .venv) first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo index serve lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ray,map]'
	touch $(STAMP)

## Run the whole test suite (what CI runs), with the browser the gallery's tests drive.
test: install
	scripts/ensure-browser
	$(BIN)/python -m pytest

## The web gallery of the library: make serve (then open http://127.0.0.1:8765/)
serve: install
	$(BIN)/photosearch serve $(SERVE_ARGS)

## Offline demo: generated pictures, a tiny model trained by our test code, a real query.
demo: install
	$(BIN)/python scripts/demo.py

## Index a folder with the default model: make index DIR=~/Pictures
index: install
	@test -n "$(DIR)" || { echo "usage: make index DIR=/path/to/photos" >&2; exit 2; }
	$(BIN)/photosearch index "$(DIR)"

## Speed on this machine, photosearch vs rclip (offline, ~25 min; smoke run: make bench BENCH_ARGS=--quick)
bench: install
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check photosearch tests scripts

clean:
	rm -rf $(VENV) demo .cache .pytest_cache build *.egg-info test-artifacts
