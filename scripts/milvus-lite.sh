#!/usr/bin/env bash
# Milvus Lite for the Milvus store's tests (tests/store_cli.rs, index/tests/stores.rs):
#   scripts/milvus-lite.sh start   install it in target/milvus-venv (pip) if needed, start a server
#                                  on a free loopback port, print the variables for the tests:
#                                  MILVUS_URI=milvus://127.0.0.1:PORT and MILVUS_LITE=<program>
#   scripts/milvus-lite.sh stop    stop that server by its PID (SIGTERM) and remove its data
# `eval "$(scripts/milvus-lite.sh start)"` sets them in a shell; .ci/run does that around `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/milvus-venv
pidfile=target/milvus-lite.pid
data=target/milvus-lite-data
# The server imports pymilvus's gRPC stubs.
packages="milvus-lite==3.2.2 pymilvus==3.0.2"

install() {
    if [ "$(cat "$venv/.packages" 2>/dev/null)" != "$packages" ]; then
        python3 -m venv "$venv" >&2
        # shellcheck disable=SC2086
        "$venv/bin/pip" install --quiet --disable-pip-version-check $packages >&2
        echo "$packages" >"$venv/.packages"
    fi
}

case "${1:-}" in
start)
    install
    "$0" stop >/dev/null 2>&1 || true
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    rm -rf "$data" && mkdir -p "$data"
    nohup "$venv/bin/milvus-lite" server --data-dir "$data" --host 127.0.0.1 --port "$port" \
        >target/milvus-lite.log 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 300); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            echo "export MILVUS_URI=milvus://127.0.0.1:$port"
            echo "export MILVUS_LITE=$PWD/$venv/bin/milvus-lite"
            echo "milvus-lite: serving on 127.0.0.1:$port (PID $(cat "$pidfile"), log target/milvus-lite.log)" >&2
            exit 0
        fi
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "milvus-lite: the server exited; its log:" >&2
            cat target/milvus-lite.log >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "milvus-lite: no answer on port $port after 30 s" >&2
    exit 1
    ;;
stop)
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    fi
    rm -rf "$data"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
