#!/usr/bin/env bash
# What the `rag serve` tests drive the server with: the official `openai` Python client and
# Selenium in target/py (from tests/serve/requirements.txt), and Debian's Chromium and
# ChromeDriver; and Tesseract with poppler's pdftoppm for the OCR test (apt, when this runs as
# root on a Debian-like system). Running it again when all
# is present does nothing. Anything it cannot install, it names; the tests then say they skipped
# (or fail, with RAG_SERVE_TESTS=require, as CI sets).
set -uo pipefail
cd "$(dirname "$0")/.."

venv=target/py
req=tests/serve/requirements.txt
stamp="$venv/.requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    if python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"; then
        cp "$req" "$stamp"
    else
        echo "test-deps: could not make $venv with $(tr '\n' ' ' < "$req")(pip); the server's client tests will skip" >&2
    fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing chromium and chromium-driver (apt)" >&2
        { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; } \
            || echo "test-deps: apt could not install chromium chromium-driver; the browser test will skip" >&2
    else
        echo "test-deps: /usr/bin/chromium and /usr/bin/chromedriver are missing (apt install chromium chromium-driver as root); the browser test will skip" >&2
    fi
fi

# OCR of scanned PDF pages: tesseract reads what pdftoppm renders.
if ! command -v tesseract >/dev/null || ! command -v pdftoppm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test-deps: installing tesseract-ocr and poppler-utils (apt)" >&2
        { apt-get install -y -q tesseract-ocr poppler-utils >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tesseract-ocr poppler-utils >/dev/null 2>&1; }; } \
            || echo "test-deps: apt could not install tesseract-ocr poppler-utils; the OCR test will skip" >&2
    else
        echo "test-deps: tesseract or pdftoppm is missing (apt install tesseract-ocr poppler-utils as root); the OCR test will skip" >&2
    fi
fi
exit 0
