#!/usr/bin/env python3
"""Reference forward results from llama.cpp for the default model.

Writes model/tests/fixtures/smollm2_reference.json: for a few prompts, the prompt token ids, llama.cpp's
top-10 next-token logits after the prompt, and its greedy continuation (no repeat penalty, EOS
ignored). model/tests/model_reference.rs checks rag's own Llama forward against it.

Rerun (needs the llama-cpp-python venv from scripts/llamacpp-venv.sh):
    $(scripts/llamacpp-venv.sh) scripts/make_smollm2_reference.py [MODEL_PATH]
"""
import hashlib
import json
import os
import sys

import llama_cpp
import numpy as np

HOME = os.environ.get("RAG_HOME", os.path.expanduser("~/.cache/rag"))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HOME, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(os.path.dirname(__file__), "..", "model", "tests", "fixtures", "smollm2_reference.json")
GEN = 24

PROMPTS = [
    ("chatml_capital", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
     "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
    ("plain_story", "Once upon a time, in a small village by the sea, there lived"),
    ("plain_facts", "The Apollo program was the third United States human spaceflight program"
     " carried out by NASA, which accomplished landing the first humans on the Moon from 1969 to"
     " 1972. It was first conceived during"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
]


def main():
    sha = hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
    llm = llama_cpp.Llama(model_path=MODEL, n_ctx=512, n_threads=2, n_batch=512,
                          logits_all=True, verbose=False)
    cases = []
    for name, text in PROMPTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-logits)[:10]
        gen = []
        for _ in range(GEN):
            nxt = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1])))
            gen.append(nxt)
            llm.eval([nxt])
        cases.append({
            "name": name,
            "prompt_ids": ids,
            "top10_ids": [int(i) for i in top],
            "top10_logits": [round(float(logits[i]), 4) for i in top],
            "greedy_ids": gen,
        })
    doc = {
        "generator": f"llama-cpp-python {llama_cpp.__version__}, n_threads=2, greedy, no penalty",
        "model_file": os.path.basename(MODEL),
        "model_sha256": sha,
        "cases": cases,
    }
    with open(OUT, "w") as f:
        # One line per case keeps the fixture diffable.
        f.write("{\n")
        for k in ("generator", "model_file", "model_sha256"):
            f.write(f" {json.dumps(k)}: {json.dumps(doc[k])},\n")
        f.write(' "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c) for c in cases))
        f.write("\n ]\n}\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
