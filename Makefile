# `make demo`: set up and run the demo; `make test`: set up and run the tests.
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/pipeline-plugin demo

test: setup
	.venv/bin/python -m pytest
