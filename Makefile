# The two commands that do everything on a fresh machine:
#   make demo   fetch the models, build, and run the default model end to end
#   make test   fetch the models (the default chat model and all-MiniLM-L6-v2), build, and run every test
SHELL := /bin/bash
CARGO ?= cargo
RAG_SHARED ?= $(abspath ../shared)
export RAG_SHARED

.PHONY: demo test model check lint bench llamacpp clean-cache

model:
	@scripts/fetch-models.sh --all >/dev/null

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
