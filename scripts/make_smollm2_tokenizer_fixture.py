#!/usr/bin/env python3
"""Write model/tests/fixtures/smollm2_tokenizer.json: reference token ids from llama.cpp.

The fixture holds, for a set of varied inputs, the ids that llama.cpp (through
llama-cpp-python 0.3.36) gives for the default model's tokenizer, so that the Rust
tokenizer can be checked against them without llama.cpp or the network.

To rerun it (the venv takes about 8 minutes to build the first time):

    scripts/fetch-models.sh                       # the default GGUF, prints its path
    PY="$(scripts/llamacpp-venv.sh)"              # venv with llama-cpp-python, prints its python
    "$PY" scripts/make_smollm2_tokenizer_fixture.py [MODEL_PATH] [-o OUT]

MODEL_PATH defaults to $RAG_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf (RAG_HOME defaults
to ~/.cache/rag); OUT defaults to model/tests/fixtures/smollm2_tokenizer.json in this repository.
The long-text case reads ../shared/data/squad-v1.1-dev/articles/Apollo_program.txt (beside
the repository) when it is there, and its text is stored in the fixture, so the fixture's
users need nothing else. Each case is tokenized with
llm.tokenize(text.encode(), add_bos=False, special=parse_special).
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
APOLLO = REPO.parent / "shared" / "data" / "squad-v1.1-dev" / "articles" / "Apollo_program.txt"

CHATML = (
    "<|im_start|>system\nYou are helpful.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n"
)

CODE = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    if n < 2:
        return n
    a, b = 0, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return b


fn main() {
    let v: Vec<u32> = (1..=10).map(|x| x * x).collect();
    println!("{:?} {}", v, v.iter().sum::<u32>());
}
'''


def long_text() -> str:
    if APOLLO.is_file():
        text = APOLLO.read_text(encoding="utf-8")[:3000]
        # End on a sentence, so the case is a realistic paragraph.
        cut = text.rfind(". ")
        return text[: cut + 1] if cut > 0 else text
    sys.exit(f"make_smollm2_tokenizer_fixture: {APOLLO} is missing (needed for the long-text case)")


def cases():
    # (name, text, parse_special)
    return [
        ("empty", "", False),
        ("hello", "Hello world", False),
        ("chatml_special", CHATML, True),
        ("chatml_plain", CHATML, False),
        ("special_tokens_mixed", "<|endoftext|>Done.<|im_end|> <|im_start|>x<|unknown|> <|im_end|>", True),
        ("special_tokens_as_text", "<|endoftext|>Done.<|im_end|> <|im_start|>x<|unknown|> <|im_end|>", False),
        ("digits", "In 1973 the price rose 400% to $11.65 per barrel; 3.14159 2^10=1024", False),
        ("long_number", "Call 0123456789 or 12345678901234567890, ids 007 and 1,000,000.", False),
        ("cjk", "日本語のテキストと中文字符，한국어도", False),
        ("emoji", "I ❤️ Rust 🦀🚀 👨‍👩‍👧", False),
        ("code", CODE, False),
        ("whitespace_runs", "a  b   c\t\td\n\n\n  e    \n", False),
        ("leading_trailing_spaces", "   leading and trailing spaces   ", False),
        ("single_space", " ", False),
        ("newlines_crlf", "line one\r\nline two\r\n\r\n\tindented\n", False),
        ("contractions", "I'm sure they'll say it's John's", False),
        ("contractions_upper", "I'M SURE THEY'LL SAY IT'S JOHN'S, we've we'd you're", False),
        ("accented_latin", "Café naïve résumé Ünïcödé", False),
        ("other_scripts", "Привет, мир! Γειά σου κόσμε. مرحبا بالعالم नमस्ते दुनिया", False),
        ("punctuation", "Wait... what?! (yes) [no] {maybe} -- \"quoted\" 'single' `tick` a/b\\c @user #tag", False),
        ("long_paragraph", long_text(), False),
    ]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def render(doc) -> str:
    """Pretty but compact JSON: one case per block, each id list on one line."""
    out = ["{"]
    for key in ("generator", "model_file", "model_sha256"):
        out.append(f"  {json.dumps(key)}: {json.dumps(doc[key], ensure_ascii=False)},")
    out.append('  "cases": [')
    blocks = []
    for c in doc["cases"]:
        blocks.append(
            "    {\n"
            f'      "name": {json.dumps(c["name"])},\n'
            f'      "text": {json.dumps(c["text"], ensure_ascii=False)},\n'
            f'      "parse_special": {json.dumps(c["parse_special"])},\n'
            f'      "ids": {json.dumps(c["ids"], separators=(",", ":"))}\n'
            "    }"
        )
    out.append(",\n".join(blocks))
    out.append("  ]")
    out.append("}")
    return "\n".join(out) + "\n"


def main():
    rag_home = Path(os.environ.get("RAG_HOME") or Path.home() / ".cache" / "rag")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=str(rag_home / "models" / MODEL_FILE),
                    help="the SmolLM2 GGUF (default: %(default)s)")
    ap.add_argument("-o", "--out", default=str(REPO / "model" / "tests" / "fixtures" / "smollm2_tokenizer.json"))
    args = ap.parse_args()

    try:
        import llama_cpp
    except ImportError:
        sys.exit("make_smollm2_tokenizer_fixture: llama_cpp is not importable; run it with the "
                 "python that scripts/llamacpp-venv.sh prints")
    model = Path(args.model)
    if not model.is_file():
        sys.exit(f"make_smollm2_tokenizer_fixture: no model at {model} (run scripts/fetch-models.sh)")
    sha = sha256_of(model)
    if sha != EXPECTED_SHA256:
        print(f"make_smollm2_tokenizer_fixture: warning: {model} has sha256 {sha}, "
              f"not the expected {EXPECTED_SHA256}", file=sys.stderr)

    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    doc = {
        "generator": f"scripts/make_smollm2_tokenizer_fixture.py with llama-cpp-python {llama_cpp.__version__} "
                     "(llm.tokenize(text.encode(), add_bos=False, special=parse_special))",
        "model_file": model.name,
        "model_sha256": sha,
        "cases": [],
    }
    for name, text, special in cases():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        # Round trip as a sanity check (ids -> bytes); a mismatch is reported, not fatal.
        back = llm.detokenize(ids, special=special).decode("utf-8", errors="replace")
        if back != text:
            print(f"make_smollm2_tokenizer_fixture: note: case {name!r} does not round-trip exactly",
                  file=sys.stderr)
        doc["cases"].append({"name": name, "text": text, "parse_special": special, "ids": list(ids)})

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(doc), encoding="utf-8")
    # The rendering is hand-made: check that it parses back to the same document.
    assert json.loads(out.read_text(encoding="utf-8")) == doc
    print(f"{out}: {len(doc['cases'])} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
