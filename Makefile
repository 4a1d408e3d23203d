.PHONY: setup test lint demo bench clean

VENV := .venv
BIN := $(VENV)/bin

setup:
	@scripts/setup.sh

lint: setup
	$(BIN)/ruff check modelctl registry tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q

demo: setup
	@scripts/demo.sh

bench: setup
	$(BIN)/python benchmarks/pull.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
