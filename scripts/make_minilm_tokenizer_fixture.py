#!/usr/bin/env python3
"""Write model/tests/fixtures/all-minilm-l6-v2/tokenizer_cases.json: reference WordPiece ids.

The fixture holds, for a set of varied inputs, the ids that Hugging Face `tokenizers` gives
with all-MiniLM-L6-v2's tokenizer.json (truncation and padding switched off), so that the
Rust WordPiece tokenizer can be checked against them without Python or the network.

To rerun it:

    scripts/fetch-models.sh --minilm              # the model directory, prints its path
    python3 -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers==0.23.3
    /tmp/tok/bin/python scripts/make_minilm_tokenizer_fixture.py [MODEL_DIR] [-o OUT]

MODEL_DIR defaults to $RAG_HOME/models/all-MiniLM-L6-v2 (RAG_HOME defaults to ~/.cache/rag);
OUT defaults to model/tests/fixtures/all-minilm-l6-v2/tokenizer_cases.json in this repository.
The long-text cases read two SQuAD v1.1 dev articles (CC BY-SA 4.0) from
../shared/data/squad-v1.1-dev/articles/ beside the repository; their text is stored in the
fixture, so its users need nothing else. Each case is `tokenizer.encode(text).ids`, which
adds [CLS] and [SEP]. No case contains a special token's text ("[SEP]"), which `tokenizers`
would parse as that token and rag, on purpose, does not.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import tokenizers

REPO = Path(__file__).resolve().parent.parent
ARTICLES = REPO.parent / "shared" / "data" / "squad-v1.1-dev" / "articles"
EXPECTED_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def article(name: str, chars: int) -> str:
    path = ARTICLES / name
    if not path.is_file():
        sys.exit(f"make_minilm_tokenizer_fixture: {path} is missing (needed for the long-text cases)")
    text = path.read_text(encoding="utf-8")[:chars]
    cut = text.rfind(". ")
    return text[: cut + 1] if cut > 0 else text


def cases():
    return [
        ("empty", ""),
        ("spaces_only", " \t\n "),
        ("hello", "Hello world"),
        ("fixture_sentence", "This is an example sentence"),
        ("accents", "Café déjà vu, naïve résumé at the Élysée; Ångström, Dvořák, Łódź, São Paulo"),
        ("decomposed_accents", "Cafe\u0301 and re\u0301sume\u0301"),
        ("case_and_sigma", "ΟΔΟΣ Σίσυφος İstanbul STRASSE Straße ﬁne ǅ"),
        ("punctuation", "Hello,world! (yes) \"quoted\" 'single' — dash – en… ¿qué? ¡sí! «guillemets» [x]{y}<z>"),
        ("ascii_symbols", "a$b+c^d`e|f~g=h 100% #tag @user &amp; *bold* _under_ \\back/slash"),
        ("digits", "In 1973 the price rose 400% to $11.65 per barrel; 3.14159 2^10=1024 1,000,000"),
        ("cjk", "日本語のテキストと中文字符，한국어도 ㄱ 丽𠀀"),
        ("emoji", "I ❤️ Rust 🦀🚀 👨‍👩‍👧 ☃"),
        ("control_chars", "tab\tnew\nline\r\nnul\x00bel\x07zero\u200bwidth\ufeffbom\ufffdrepl\u00adsoft"),
        ("unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u0085f"),
        ("subwords", "unaffable tokenization antidisestablishmentarianism hyperparameters"),
        ("long_word", "x" * 100 + " " + "y" * 101 + " ok"),
        ("url_code", "https://example.com/a-b_c?q=1&r=2#frag fn main() { let v: Vec<u32> = vec![]; }"),
        ("mixed_scripts", "Привет мир, Γειά σου κόσμε, שלום, مرحبا, नमस्ते, สวัสดี"),
        ("black_death", article("Black_Death.txt", 3000)),
        ("yuan_dynasty", article("Yuan_dynasty.txt", 6000)),
    ]


def main():
    home = Path(os.environ.get("RAG_HOME") or Path.home() / ".cache" / "rag")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", default=home / "models" / "all-MiniLM-L6-v2", type=Path)
    ap.add_argument("-o", "--out", default=REPO / "model/tests/fixtures/all-minilm-l6-v2/tokenizer_cases.json", type=Path)
    args = ap.parse_args()
    path = args.model_dir / "tokenizer.json"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != EXPECTED_SHA256:
        sys.exit(f"make_minilm_tokenizer_fixture: {path} has sha256 {sha}, expected {EXPECTED_SHA256}")
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    out = {
        "generator": f"scripts/make_minilm_tokenizer_fixture.py, tokenizers {tokenizers.__version__}",
        "tokenizer_sha256": sha,
        "cases": [{"name": n, "text": t, "ids": tok.encode(t).ids} for n, t in cases()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(out['cases'])} cases to {args.out}")


if __name__ == "__main__":
    main()
