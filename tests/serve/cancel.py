#!/usr/bin/env python3
"""Regression check: a client that goes away mid-answer must not break later answers.

    python3 tests/serve/cancel.py --base http://127.0.0.1:PORT [--key KEY]

Standard library only. Run it on an idle server (nothing else asking). For each way a client can
stop an answer -- the page's Stop button on /api/ask (connection closed during prefill, and during
decoding) and an OpenAI client dropping a `stream: true` completion -- it starts the answer, closes
the connection, waits for the queue to drain, then asks "Who is the harbour master?" again: the
answer must still name Brandt with a citation (the demo corpus, examples/corpus).
Exit 0 when all passed; on the first failure prints `FAIL: ...` and exits 1.
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Server:
    def __init__(self, base, key):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.prefix, self.key = u.hostname, u.port or 80, u.path.rstrip("/"), key

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=120)

    def headers(self, extra=None):
        h = {"Authorization": "Bearer " + self.key} if self.key else {}
        h.update(extra or {})
        return h

    def post(self, path, obj, accept="application/json"):
        c = self.conn()
        c.request("POST", self.prefix + path, body=json.dumps(obj).encode(),
                  headers=self.headers({"Content-Type": "application/json", "Accept": accept}))
        return c, c.getresponse()

    def queue(self):
        c = self.conn()
        try:
            c.request("GET", self.prefix + "/api/health", headers=self.headers())
            r = c.getresponse()
            body = r.read()
            check(r.status == 200, f"GET /api/health: HTTP {r.status}: {body[:200]!r}")
            return json.loads(body)["queue"]
        finally:
            c.close()


def sse_events(resp):
    event, data = "message", []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def ask(srv, question):
    c, r = srv.post("/api/ask", {"question": question}, "text/event-stream")
    try:
        if r.status != 200:
            raise CheckFailed(f"ask {question!r}: HTTP {r.status}: {r.read()[:200]!r}")
        for ev, data in sse_events(r):
            if ev == "answer":
                return json.loads(data)
            check(ev != "error", f"ask {question!r}: error event {data[:200]}")
        raise CheckFailed(f"ask {question!r}: the stream ended without an answer")
    finally:
        c.close()


def wait_idle(srv, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        q = srv.queue()
        if not q.get("running") and not q.get("waiting"):
            return time.time() - t0
        time.sleep(0.2)
    raise CheckFailed(f"the queue did not drain within {timeout} s after the client went away: {srv.queue()}")


def still_answers(srv, after):
    a = ask(srv, "Who is the harbour master?")
    gen = (a.get("timings") or {}).get("generated_tokens")
    check("Brandt" in a.get("answer", "") and not a.get("abstained") and a.get("citations"),
          f"after {after}, 'Who is the harbour master?' got {a.get('answer')!r} (abstained={a.get('abstained')}, "
          f"reason={a.get('abstain_reason')}, stop={a.get('stop')}, generated_tokens={gen}): "
          f"the model no longer answers")
    return a["answer"]


def close(c):
    if c.sock:
        c.sock.close()
    c.close()


def run(srv):
    q = srv.queue()
    check(not q.get("running") and not q.get("waiting"), f"the server is not idle: queue {q}")
    print(f"ok  baseline: {still_answers(srv, 'nothing')!r}", flush=True)

    for delay, phase in ((0.0, "prefill"), (0.4, "prefill"), (1.0, "decoding")):
        what = f"Stop on /api/ask {delay:.1f} s after the passages event ({phase})"
        print(f"... {what}", flush=True)
        c, r = srv.post("/api/ask", {"question": "Who designed the Kessel Harbour Bridge?"}, "text/event-stream")
        check(r.status == 200, f"{what}: HTTP {r.status}")
        for ev, _ in sse_events(r):
            if ev == "passages":
                break
        time.sleep(delay)
        close(c)
        drained = wait_idle(srv)
        print(f"ok  {what}: queue drained in {drained:.1f} s; next answer {still_answers(srv, what)!r}", flush=True)

    what = "dropping a streamed /v1/chat/completions after 3 chunks"
    print(f"... {what}", flush=True)
    c, r = srv.post("/v1/chat/completions", {
        "model": "rag", "stream": True,
        "messages": [{"role": "user", "content": "Who designed the Kessel Harbour Bridge?"}]}, "text/event-stream")
    check(r.status == 200, f"{what}: HTTP {r.status}")
    n = 0
    while n < 3:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data:"):
            n += 1
    close(c)
    drained = wait_idle(srv)
    print(f"ok  {what}: queue drained in {drained:.1f} s; next answer {still_answers(srv, what)!r}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="server root, e.g. http://127.0.0.1:8095")
    ap.add_argument("--key", default=None, help="API key, when the server has one")
    args = ap.parse_args()
    try:
        run(Server(args.base, args.key))
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (OSError, http.client.HTTPException) as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("PASS cancel", flush=True)


if __name__ == "__main__":
    main()
