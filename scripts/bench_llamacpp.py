#!/usr/bin/env python3
"""Reference throughput of llama.cpp (through llama-cpp-python) on a GGUF.

Measures, on the CPU with a fixed thread count, what our Rust implementation is compared
with: prompt evaluation (tokens/s), greedy generation (tokens/s), mean-pooled embedding
(tokens/s) and peak RSS.

    PY="$(scripts/llamacpp-venv.sh)"       # venv with llama-cpp-python 0.3.36
    "$PY" scripts/bench_llamacpp.py --model "$(scripts/fetch-models.sh)" \\
        --prompt-file prompt.txt --threads 2 --gen-tokens 64 \\
        [--embed-file doc.txt --embed-chunk-tokens 200] [--runs 3] [--json]

How each number is taken:
  prompt: the prompt's tokens (BOS as the model's metadata says) are evaluated in one
    llama_decode (n_batch = n_ubatch >= prompt length) from an empty KV cache; one warm-up,
    then --runs timed runs; prompt_tok_s is the median (the best is also given).
  generation: after each timed prompt, --gen-tokens tokens are decoded one at a time, each
    the argmax of the previous logits (greedy; EOS is ignored); gen_tok_s is the median over
    runs of gen_tokens / time, excluding the prompt.
  --serve: the model is loaded and warmed up once (then one JSON line, {"ready", and
    "prompt_tokens" as llama.cpp counts them}), then each line `run` on stdin times one
    prompt and its generation and answers one JSON line ({"prompt_s", "gen_s"}); `done` ends
    the runs and the report follows as without it. A caller alternates these runs with its
    own, so that both engines are measured in the same minutes of a machine whose speed
    drifts (rag bench model does).
  embedding: a second Llama(embedding=True, pooling_type=MEAN) embeds the text of
    --embed-file, split into chunks of --embed-chunk-tokens tokens (each chunk embedded on
    its own, one llama_decode per chunk, as an indexer would; --embed-batched packs chunks
    into 2048-token batches instead, llama-cpp-python's own batching). One warm-up chunk,
    then one timed pass over all chunks; embed_tokens counts the tokens decoded.
  peak_rss_mib: VmHWM of this process at the end (both models loaded one after the other).
Run it on an otherwise idle machine: with other processes on the cores, llama.cpp's
spin-waiting threads slow down far more than their share (the load average is reported).
"""

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time


def peak_rss_mib():
    """Peak RSS of this process. VmHWM belongs to this process image; ru_maxrss is not reset
    by exec on Linux, so when a big parent (rag bench) starts this script it reports the
    parent's peak instead."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def die(msg):
    print(f"bench_llamacpp: {msg}", file=sys.stderr)
    sys.exit(2)


def tokenize_only(llama_cpp, path, text):
    """`text`'s token ids (BOS first) from the model's vocabulary alone, without a context:
    `Llama(vocab_only=True)` also makes a context, which on random-weight files of the
    Llama 2 shapes sometimes fails ("n_ctx_seq (512) > n_ctx_train (0)")."""
    from llama_cpp._utils import suppress_stdout_stderr  # what Llama(verbose=False) uses

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), params)
    if not model:
        die(f"llama.cpp could not read the vocabulary of {path}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        buf = (llama_cpp.llama_token * (len(text) + 16))()
        n = llama_cpp.llama_tokenize(vocab, text, len(text), buf, len(buf), True, False)
        if n < 0:
            die(f"llama.cpp could not tokenize the prompt ({n})")
        return list(buf[:n])
    finally:
        llama_cpp.llama_model_free(model)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--prompt-file", required=True, help="text file whose contents are the prompt")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--embed-file", help="text file to embed (optional)")
    ap.add_argument("--embed-chunk-tokens", type=int, default=200)
    ap.add_argument("--embed-batched", action="store_true",
                    help="pack embedding chunks into 2048-token batches instead of one decode per chunk")
    ap.add_argument("--runs", type=int, default=3, help="timed runs for prompt and generation")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--serve", action="store_true",
                    help="time one run per `run` line on stdin (one JSON line each) until `done`")
    args = ap.parse_args()

    try:
        import numpy as np
        import llama_cpp
        from llama_cpp import Llama
    except ImportError as e:
        die(f"cannot import llama_cpp ({e}); run with the python that scripts/llamacpp-venv.sh prints")
    for f in (args.model, args.prompt_file, args.embed_file):
        if f is not None and not os.path.isfile(f):
            die(f"no such file: {f}")
    if args.threads < 1 or args.gen_tokens < 1 or args.runs < 1 or args.embed_chunk_tokens < 1:
        die("--threads, --gen-tokens, --runs and --embed-chunk-tokens must be positive")

    with open(args.prompt_file, encoding="utf-8") as f:
        prompt = f.read()
    load_start = os.getloadavg()[0]

    # ---- prompt and generation ----
    prompt_ids = tokenize_only(llama_cpp, args.model, prompt.encode("utf-8"))
    n_prompt = len(prompt_ids)
    if n_prompt == 0:
        die("the prompt is empty")
    if n_prompt + args.gen_tokens > args.n_ctx:
        die(f"prompt ({n_prompt}) + gen tokens ({args.gen_tokens}) exceed n_ctx {args.n_ctx}")
    n_batch = max(512, n_prompt)
    llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,))

    def eval_prompt():
        llm.reset()  # n_tokens = 0; eval() then drops the KV cache from position 0 on
        t0 = time.perf_counter()
        llm.eval(prompt_ids)
        return time.perf_counter() - t0

    def generate(n):
        t0 = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(last_logits()))
            llm.eval([tok])
        return time.perf_counter() - t0

    def run():
        """One timed prompt and the generation after it: (prompt s, generation s)."""
        p = eval_prompt()
        return p, generate(args.gen_tokens)

    eval_prompt()  # warm-up of the prompt path...
    generate(min(args.gen_tokens, 8))  # ...and of the single-token one
    prompt_times, gen_times = [], []
    if args.serve:
        print(json.dumps({"ready": True, "prompt_tokens": n_prompt}), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "done":
                break
            if cmd != "run":
                die(f"unknown command {cmd!r} on stdin (expected `run` or `done`)")
            p, g = run()
            prompt_times.append(p)
            gen_times.append(g)
            print(json.dumps({"prompt_s": p, "gen_s": g}), flush=True)
        if not prompt_times:
            die("no run was asked for before `done`")
    else:
        for _ in range(args.runs):
            p, g = run()
            prompt_times.append(p)
            gen_times.append(g)
    # The greedy continuation, for eyeballing against our implementation.
    eval_prompt()
    cont = []
    for _ in range(min(args.gen_tokens, 32)):
        tok = int(np.argmax(last_logits()))
        cont.append(tok)
        llm.eval([tok])
    continuation = llm.detokenize(cont).decode("utf-8", errors="replace")
    del llm

    result = {
        "prompt_tokens": n_prompt,
        "prompt_tok_s": n_prompt / statistics.median(prompt_times),
        "prompt_tok_s_best": n_prompt / min(prompt_times),
        "gen_tokens": args.gen_tokens,
        "gen_tok_s": args.gen_tokens / statistics.median(gen_times),
        "gen_tok_s_best": args.gen_tokens / min(gen_times),
        "embed_tokens": None,
        "embed_tok_s": None,
        "embed_error": None,
        "embed_mode": None,
        "peak_rss_mib": None,
        "threads": args.threads,
        "llama_cpp_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "greedy_continuation": continuation,
    }

    # ---- embedding ----
    if args.embed_file:
        try:
            with open(args.embed_file, encoding="utf-8") as f:
                text = f.read()
            eb = 2048 if args.embed_batched else max(512, args.embed_chunk_tokens + 16)
            emb = Llama(model_path=args.model, embedding=True,
                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                        n_ctx=max(args.n_ctx, eb), n_batch=eb, n_ubatch=eb,
                        n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
            ids = emb.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            chunks = [emb.detokenize(ids[i:i + args.embed_chunk_tokens]).decode("utf-8", errors="ignore")
                      for i in range(0, len(ids), args.embed_chunk_tokens)]
            chunks = [c for c in chunks if c.strip()]
            if not chunks:
                raise ValueError("the embed file has no text")
            emb.embed(chunks[0])  # warm-up
            t0 = time.perf_counter()
            if args.embed_batched:
                vecs, n_tok = emb.embed(chunks, return_count=True)
            else:
                vecs, n_tok = [], 0
                for c in chunks:
                    v, n = emb.embed(c, return_count=True)
                    vecs.append(v)
                    n_tok += n
            dt = time.perf_counter() - t0
            if len(vecs) != len(chunks) or not all(len(v) == emb.n_embd() for v in vecs):
                raise RuntimeError("embed() returned vectors of the wrong shape")
            if not all(np.isfinite(np.asarray(v)).all() for v in vecs):
                raise RuntimeError("embed() returned non-finite values")
            result.update(embed_tokens=n_tok, embed_tok_s=n_tok / dt,
                          embed_mode=("batched" if args.embed_batched else "per-chunk")
                          + f", {len(chunks)} chunks of <= {args.embed_chunk_tokens} tokens")
            del emb
        except Exception as e:  # report, don't fail: embedding mode is optional here
            result["embed_error"] = f"{type(e).__name__}: {e}"

    result["peak_rss_mib"] = peak_rss_mib()
    # Other work on the machine skews everything (llama.cpp's threads spin-wait, so a
    # contended core costs far more than its share): the 1-minute load average says how busy.
    result["loadavg_1m_start"] = load_start
    result["loadavg_1m_end"] = os.getloadavg()[0]

    if args.json:
        print(json.dumps(result))
        return
    def fmt(v):
        return "-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))
    print(f"llama-cpp-python {result['llama_cpp_version']}, {args.threads} threads, model {args.model}")
    print(f"  prompt      {result['prompt_tokens']:>6} tokens  {fmt(result['prompt_tok_s']):>8} tok/s"
          f"  (best {fmt(result['prompt_tok_s_best'])})")
    print(f"  generation  {result['gen_tokens']:>6} tokens  {fmt(result['gen_tok_s']):>8} tok/s"
          f"  (best {fmt(result['gen_tok_s_best'])})")
    if args.embed_file:
        if result["embed_error"]:
            print(f"  embedding   failed: {result['embed_error']}")
        else:
            print(f"  embedding   {result['embed_tokens']:>6} tokens  {fmt(result['embed_tok_s']):>8} tok/s"
                  f"  ({result['embed_mode']})")
    print(f"  peak RSS    {fmt(result['peak_rss_mib'])} MiB")
    print(f"  load avg    {result['loadavg_1m_start']:.2f} at start, {result['loadavg_1m_end']:.2f} at end"
          f" (on {os.cpu_count()} CPUs)")
    print(f"  greedy continuation: {continuation!r}")


if __name__ == "__main__":
    main()
