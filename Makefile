# The two commands that do everything on a fresh machine:
#   make demo   fetch the default model, build, and run the model end to end
#   make test   fetch the default model, build, and run every test
SHELL := /bin/bash
CARGO ?= cargo
RAG_SHARED ?= $(abspath ../shared)
export RAG_SHARED

.PHONY: demo test model check lint bench llamacpp clean-cache

model:
	@scripts/fetch-models.sh >/dev/null

demo: model
	$(CARGO) build --release
	./target/release/rag model info
	./target/release/rag chat "What is the capital of France?"

test: model
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check: lint test

llamacpp:
	@scripts/llamacpp-venv.sh

bench: model llamacpp
	$(CARGO) build --release
	./target/release/rag bench model --threads 2
