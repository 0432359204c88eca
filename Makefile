# The two commands that do everything on a fresh machine:
#   make demo   fetch the models, build, index the demo corpus and ask it questions
#   make test   fetch the models (the default chat model and all-MiniLM-L6-v2), build, and run every test
SHELL := /bin/bash
CARGO ?= cargo
RAG_SHARED ?= $(abspath ../shared)
export RAG_SHARED

.PHONY: demo test model test-deps check lint bench bench-shapes bench-shapes-avx2 bench-index bench-store eval llamacpp clean-cache serve

model:
	@scripts/fetch-models.sh --all >/dev/null

# What the server tests drive it with: the openai client and Selenium (target/py), Chromium.
test-deps:
	@scripts/test-deps.sh

# The demo: index the sample corpus in examples/corpus (a fictional harbour town), then ask one
# question it answers and one it does not.
DEMO_INDEX := target/demo-index
demo: model
	$(CARGO) build --release
	./target/release/rag ingest --index $(DEMO_INDEX) examples/corpus
	./target/release/rag ask --index $(DEMO_INDEX) "Who designed the Kessel Harbour Bridge?"
	./target/release/rag ask --index $(DEMO_INDEX) "What is the boiling point of mercury?"

test: model test-deps
	$(CARGO) test --workspace

# The web page and the API over the demo index: http://127.0.0.1:8080
serve: model
	$(CARGO) build --release
	./target/release/rag ingest --index $(DEMO_INDEX) examples/corpus
	./target/release/rag serve --index $(DEMO_INDEX)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-architecture.py
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

check: lint test

llamacpp:
	@scripts/llamacpp-venv.sh

# Speed against llama.cpp (README, "Benchmark"): each format made from the default model with
# llama.cpp's llama-quantize (built by scripts/llamacpp-venv.sh), 2 threads, in one run.
BENCH_FORMATS ?= q4_0,q4_1,q8_0,q4_k_m
bench: model llamacpp
	$(CARGO) build --release
	./target/release/rag bench model --threads 2 --formats $(BENCH_FORMATS)

# Speed on the shapes users run (README, "Benchmark"): random-weight TinyLlama and Llama 2 7B
# (8 of 32 layers) files made by $(RAG_SHARED)/tools/make_llama_shaped.py (it needs gguf in the
# llama.cpp venv), each quantized to Q4_0, Q4_K_M, Q5_K_M, Q6_K and Q8_0, a 1,500-token prompt.
bench-shapes: llamacpp
	$(CARGO) build --release
	"$$(scripts/llamacpp-venv.sh)" -m pip install -q gguf
	./target/release/rag bench model --threads 2 --shape tinyllama --prompt-tokens 1500
	./target/release/rag bench model --threads 2 --shape llama2-7b --layers 8 --prompt-tokens 1500

# The same with both engines held to AVX2, FMA and F16C on a newer CPU (rag: RAG_KERNELS=avx2-plain;
# llama.cpp: a second build, LLAMACPP_ISA=avx2 scripts/llamacpp-venv.sh): the code an AVX2-only
# host such as AMD's Zen 2 or 3 runs, compared where none is at hand.
bench-shapes-avx2: llamacpp
	$(CARGO) build --release
	"$$(LLAMACPP_ISA=avx2 scripts/llamacpp-venv.sh)" -m pip install -q gguf
	RAG_KERNELS=avx2-plain ./target/release/rag bench model --threads 2 --shape tinyllama --prompt-tokens 1500 \
	    --llamacpp-python "$$(LLAMACPP_ISA=avx2 scripts/llamacpp-venv.sh)"
	RAG_KERNELS=avx2-plain ./target/release/rag bench model --threads 2 --shape llama2-7b --layers 8 --prompt-tokens 1500 \
	    --llamacpp-python "$$(LLAMACPP_ISA=avx2 scripts/llamacpp-venv.sh)"

# Ingest and search benchmark (README, "Ingest and search"): the 48 SQuAD articles, then search
# latency and HNSW recall on that index; SciFact's ingest is part of `make eval`.
BENCH_INDEX := target/bench-squad-minilm
bench-index: model
	$(CARGO) build --release
	./target/release/rag ingest --quiet --reindex --embedder minilm --index $(BENCH_INDEX) $(RAG_SHARED)/data/squad-v1.1-dev/articles
	./target/release/rag bench search --index $(BENCH_INDEX)

# The stores at 100,000 chunks (README, "Stores at 100,000 chunks"): the embedded store, then
# Milvus Lite (scripts/milvus-lite.sh starts it on a free port and stops it after).
bench-store:
	$(CARGO) build --release
	./target/release/rag bench store --to target/bench-store --chunks 100000
	eval "$$(scripts/milvus-lite.sh start)" && \
	    ./target/release/rag bench store --to $$MILVUS_URI/bench --chunks 100000; \
	    status=$$?; scripts/milvus-lite.sh stop; exit $$status

# What benchmarks and evaluations generate under $RAG_HOME: the bench model files (the shapes'
# f16 sources and quantized files reach ~17 GB) and the evaluation indexes. The fetched models
# and the llama.cpp venv stay.
clean-cache:
	rm -rf "$${RAG_HOME:-$$HOME/.cache/rag}/models/bench" "$${RAG_HOME:-$$HOME/.cache/rag}/eval"

# Retrieval quality (docs/EVAL.md): SciFact with each embedder. The Llama embedder runs on a
# 1,000-document subset (the full corpus takes over an hour to embed on 2 cores).
eval: model
	$(CARGO) build --release
	./target/release/rag eval retrieval --embedder minilm
	./target/release/rag eval retrieval --embedder minilm --max-docs 1000
	./target/release/rag eval retrieval --embedder llama --max-docs 1000
