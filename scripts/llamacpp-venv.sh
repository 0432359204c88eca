#!/usr/bin/env bash
# Create (once) a Python venv with llama-cpp-python, the reference implementation used by
# scripts/make_smollm2_tokenizer_fixture.py and scripts/bench_llamacpp.py.
#
#   scripts/llamacpp-venv.sh          build if needed, then print the venv's python path
#
# The venv lives at $RAG_HOME/venv-llamacpp (RAG_HOME defaults to ~/.cache/rag).
# llama-cpp-python==0.3.36 is built from its PyPI sdist, which compiles llama.cpp with CMake
# for the CPU only (native instructions, OpenMP; no CUDA/Metal/Vulkan/curl/llava), with at
# most $LLAMACPP_JOBS (default 2) parallel compile jobs. About 8 minutes on 2 busy cores.
# CMake and Ninja come from PyPI into the venv when the system has none.
#
# The unpacked sdist and its CMake build tree are kept in $VENV/src, so llama.cpp's
# llama-quantize tool is then built from the same tree at little cost and linked into
# $VENV/bin/llama-quantize (set LLAMACPP_TOOLS=0 to skip it; a failure there only warns).
#
# LLAMACPP_AMX=0 builds llama.cpp without its AMX kernels, which -march=native compiles on
# CPUs that list AMX. On one such machine (a virtual Xeon, 2026-12-06) their first prompt
# batch died of a general protection fault in `ldtilecfg`, although a small test program
# used AMX tiles fine there; with LLAMACPP_AMX=0 it ran. LLAMACPP_AMX=0 or =1 rebuilds when
# the venv was built the other way; unset, any build is kept.
#
# LLAMACPP_ISA=avx2 builds a second venv, $RAG_HOME/venv-llamacpp-avx2, whose llama.cpp uses
# AVX2, FMA, F16C and BMI2 only (no -march=native, so no AVX-VNNI, AVX-512 or AMX): what it
# runs on an AVX2-only CPU such as AMD's Zen 2 and 3. On a newer CPU, it and
# `RAG_KERNELS=avx2-plain` compare the two engines' AVX2 code on one machine:
#   rag bench model --llamacpp-python "$(LLAMACPP_ISA=avx2 scripts/llamacpp-venv.sh)" ...
#
# Running it again when the venv works (python -c "import llama_cpp") does nothing but
# print the path. Exit code 2 on any failure.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
RAG_HOME="${RAG_HOME:-$HOME/.cache/rag}"
WANT_ISA="${LLAMACPP_ISA:-native}"
case "$WANT_ISA" in
    native) VENV="$RAG_HOME/venv-llamacpp" ;;
    avx2) VENV="$RAG_HOME/venv-llamacpp-avx2" ;;
    *) echo "llamacpp-venv: LLAMACPP_ISA must be native or avx2, not '$WANT_ISA'" >&2; exit 2 ;;
esac
JOBS="${LLAMACPP_JOBS:-2}"
WANT_TOOLS="${LLAMACPP_TOOLS:-1}"
WANT_AMX="${LLAMACPP_AMX:-}"
PY="$VENV/bin/python"
SRC_ROOT="$VENV/src"
SRC="$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
BUILD="$SRC_ROOT/build"
QUANTIZE="$VENV/bin/llama-quantize"

die() { echo "llamacpp-venv: $*" >&2; exit 2; }
log() { echo "llamacpp-venv: $*" >&2; }

have_llama() {
    # $VENV/.no-amx marks a build without AMX (LLAMACPP_AMX=0).
    case "$WANT_AMX" in
        0) [ -f "$VENV/.no-amx" ] || return 1 ;;
        1) [ ! -f "$VENV/.no-amx" ] || return 1 ;;
    esac
    [ -x "$PY" ] && "$PY" -c "import sys, llama_cpp; sys.exit(0 if llama_cpp.__version__ == '$LLAMA_CPP_PYTHON_VERSION' else 1)" >/dev/null 2>&1
}
have_quantize() {
    # A failed tools build leaves $VENV/.no-quantize, so reruns don't retry it each time.
    [ "$WANT_TOOLS" != "1" ] || [ -x "$QUANTIZE" ] || [ -f "$VENV/.no-quantize" ]
}

if have_llama && have_quantize; then
    echo "$PY"
    exit 0
fi

SYS_PY="${PYTHON:-$(command -v python3 || command -v python || true)}"
[ -n "$SYS_PY" ] || die "python3 (3.8 or newer) is needed to create $VENV"
"$SYS_PY" -c pass >/dev/null 2>&1 || die "cannot run $SYS_PY (set PYTHON to a working python3)"
"$SYS_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "$SYS_PY is older than Python 3.8"
{ command -v cc || command -v gcc; } >/dev/null 2>&1 \
    || die "a C compiler is needed to build llama.cpp (e.g. apt-get install build-essential)"
{ command -v c++ || command -v g++; } >/dev/null 2>&1 \
    || die "a C++ compiler is needed to build llama.cpp (e.g. apt-get install g++)"

if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "creating venv at $VENV"
    rm -rf "$VENV"
    mkdir -p "$RAG_HOME"
    "$SYS_PY" -m venv "$VENV" \
        || die "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# Build tools into the venv: scikit-build-core (llama-cpp-python's build backend), and
# CMake/Ninja from PyPI unless the system has them.
BUILD_DEPS=("scikit-build-core>=0.9.2")
cmake_ok() {  # a system cmake, 3.21 or newer (llama-cpp-python's minimum)
    local v
    v="$(cmake --version 2>/dev/null | head -n1 | sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
    [ -n "$v" ] && set -- $v && { [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 21 ]; }; }
}
cmake_ok || BUILD_DEPS+=("cmake>=3.21")
command -v ninja >/dev/null 2>&1 || BUILD_DEPS+=("ninja")
"${PIP[@]}" install --quiet "${BUILD_DEPS[@]}" >&2 \
    || die "could not pip install ${BUILD_DEPS[*]} into $VENV: is PyPI reachable?"
export PATH="$VENV/bin:$PATH"
CMAKE="$(command -v cmake)" || die "no cmake after installing it into $VENV"

if ! have_llama; then
    if [ ! -f "$SRC/CMakeLists.txt" ]; then
        log "downloading the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist (about 77 MB) ..."
        rm -rf "$SRC_ROOT"
        mkdir -p "$SRC_ROOT"
        "${PIP[@]}" download --quiet --no-deps --no-binary :all: --no-build-isolation \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SRC_ROOT" >&2 \
            || die "pip could not download the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist: is PyPI reachable?"
        tar -xzf "$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$SRC_ROOT" \
            || die "could not unpack the llama-cpp-python sdist"
        rm -f "$SRC_ROOT/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    fi
    log "building llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION with $JOBS jobs (log: $VENV/build.log) ..."
    export CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF"
    if [ "$WANT_ISA" = "avx2" ]; then
        CMAKE_ARGS="${CMAKE_ARGS/-DGGML_NATIVE=ON/-DGGML_NATIVE=OFF} -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF"
        log "LLAMACPP_ISA=avx2: AVX2, FMA, F16C and BMI2 only"
    elif [ "$WANT_AMX" = "0" ]; then
        # An explicit -mno-* wins over -march=native (GCC and Clang), whatever the order.
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        CMAKE_ARGS="$CMAKE_ARGS '-DCMAKE_C_FLAGS=$no_amx' '-DCMAKE_CXX_FLAGS=$no_amx'"
        log "LLAMACPP_AMX=0: without AMX"
    fi
    export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
    export MAKEFLAGS="-j$JOBS"
    start=$(date +%s)
    "${PIP[@]}" install --verbose --no-build-isolation \
        --config-settings=build-dir="$BUILD" "$SRC" > "$VENV/build.log" 2>&1 \
        || { tail -n 40 "$VENV/build.log" >&2; die "building llama-cpp-python failed; full log: $VENV/build.log"; }
    if [ "$WANT_AMX" = "0" ]; then touch "$VENV/.no-amx"; else rm -f "$VENV/.no-amx"; fi
    have_llama || die "llama-cpp-python installed, but 'import llama_cpp' fails in $VENV (see $VENV/build.log)"
    log "built in $(( $(date +%s) - start )) s"
fi

if ! have_quantize; then
    # Reconfigure the kept build tree with the tools on and build only llama-quantize:
    # ggml, llama and llama-common are already compiled there.
    if [ -f "$BUILD/CMakeCache.txt" ] && [ -f "$SRC/CMakeLists.txt" ]; then
        log "building llama-quantize from the same tree ..."
        if "$CMAKE" -S "$SRC" -B "$BUILD" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_TOOLS_INSTALL=OFF >> "$VENV/build.log" 2>&1 \
            && "$CMAKE" --build "$BUILD" --target llama-quantize -j "$JOBS" >> "$VENV/build.log" 2>&1 \
            && [ -x "$BUILD/bin/llama-quantize" ]; then
            ln -sf "$BUILD/bin/llama-quantize" "$QUANTIZE"
            log "llama-quantize: $QUANTIZE"
        else
            touch "$VENV/.no-quantize"
            log "warning: building llama-quantize failed (see $VENV/build.log); llama_cpp itself works (remove $VENV/.no-quantize to retry)"
        fi
    else
        touch "$VENV/.no-quantize"
        log "warning: no kept build tree in $BUILD, so no llama-quantize; remove $VENV and rerun to get it"
    fi
fi

echo "$PY"
