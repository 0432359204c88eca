#!/usr/bin/env python3
"""Load test for `rag serve` (Python standard library only).

    python3 tests/serve/load.py --base http://127.0.0.1:PORT [--key KEY] \
        [--clients 16] [--seconds 60] [--pid SERVER_PID]

N client threads loop until time is up, each request picked by weight:
  ask 30%     POST /api/ask, reads the whole SSE stream; 200 (must end in an `answer` event) or 503
  search 40%  GET /api/search?q=...; 200
  upload 10%  POST /api/documents (multipart) with a unique small load-<client>-<n>.md; 200, status "added"
  list 20%    GET /api/documents; 200
  (--cancel-percent N: N% asks whose client disconnects 0.05-0.5 s after its passages event, like the
   page's Stop button; off by default. Under load these were queued first; tests/serve/cancel.py
   checks a Stop on an idle server.)
After the run the model must still answer "Who is the harbour master?" (Brandt).
Failures: any other status (a 5xx other than 503 included), an SSE `error` event or a stream that
ends without an answer, any exception (connection errors included), an upload that is lost (not in
/api/documents afterwards, or its unique token not found by /api/search), and memory that does not
stay flat: end RSS > warm RSS * 1.25 + 64 MiB (RSS of --pid, from /proc/PID/status).
Prints one line `LOAD-SUMMARY {json}`; exit 0 when nothing failed. Deletes its load-* uploads at the end.
"""
import argparse
import http.client
import json
import os
import random
import re
import string
import sys
import threading
import time
import urllib.parse

ASK_QUESTIONS = [
    ("Who is the harbour master?", []),
    ("Who designed the Kessel Harbour Bridge?", []),
    ("When did it open?", ["Who designed the Kessel Harbour Bridge?"]),
    ("When is the Lantern Festival?", []),
    ("What must lanterns be made of?", ["When is the Lantern Festival?"]),
    ("How long is the Kessel Harbour Bridge?", []),
    ("What is the boiling point of mercury?", []),
    ("Where is the harbour office?", []),
]
SEARCH_QUERIES = ["harbour master", "Kessel Harbour Bridge", "ferry timetable", "lantern festival",
                  "library opening hours", "tide tables", "bridge", "who leads the procession"]
WEIGHTS = [("ask", 30), ("search", 40), ("upload", 10), ("list", 20)]
REQUEST_TIMEOUT = 180.0
MAX_ERRORS_KEPT = 10


def rss_mib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return round(v[k] * 1000.0, 1)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}        # kind -> {status: n}
        self.latency = {}       # kind -> [secs] (successful requests)
        self.errors = []        # first MAX_ERRORS_KEPT failure messages
        self.n_errors = 0
        self.uploads = {}       # name -> token
        self.answers = 0
        self.abstained = 0

    def count(self, kind, status, secs=None):
        with self.lock:
            k = self.counts.setdefault(kind, {})
            k[str(status)] = k.get(str(status), 0) + 1
            if secs is not None:
                self.latency.setdefault(kind, []).append(secs)

    def fail(self, msg):
        with self.lock:
            self.n_errors += 1
            if len(self.errors) < MAX_ERRORS_KEPT:
                self.errors.append(msg)
        print(f"FAIL: {msg}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, base, key):
        u = urllib.parse.urlsplit(base)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"--base must be http://HOST:PORT, got {base!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.key = key

    def conn(self, timeout=REQUEST_TIMEOUT):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self, extra=None):
        h = {"Accept": "application/json"}
        if self.key:
            h["Authorization"] = "Bearer " + self.key
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, headers=None):
        """One request on a fresh connection; returns (status, headers, body bytes)."""
        c = self.conn()
        try:
            c.request(method, self.prefix + path, body=body, headers=self.headers(headers))
            r = c.getresponse()
            data = r.read()
            return r.status, r, data
        finally:
            c.close()

    def json(self, method, path, body=None, headers=None):
        st, r, data = self.request(method, path, body, headers)
        try:
            j = json.loads(data) if data else None
        except ValueError:
            j = None
        return st, r, j, data


def multipart(files):
    """files: [(field, filename, bytes, content_type)] -> (body, content-type header)."""
    boundary = "----ragload" + "".join(random.choice(string.ascii_letters + string.digits) for _ in range(24))
    out = []
    for field, name, data, ctype in files:
        out.append(f"--{boundary}\r\n".encode())
        out.append(f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'.encode())
        out.append(f"Content-Type: {ctype}\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def read_sse(resp):
    """Yield (event, data-string) from an SSE response until EOF."""
    event, data = "message", []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:
        yield event, "\n".join(data)


class Client(threading.Thread):
    def __init__(self, idx, srv, stats, deadline, rng_seed, weights):
        super().__init__(name=f"client-{idx}", daemon=True)
        self.idx, self.srv, self.stats, self.deadline = idx, srv, stats, deadline
        self.rng = random.Random(rng_seed)
        self.n_upload = 0
        self.kinds = [k for k, _ in weights]
        self.weights = [w for _, w in weights]

    def run(self):
        while time.monotonic() < self.deadline:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            t0 = time.monotonic()
            try:
                getattr(self, "do_" + kind)(t0)
            except Exception as e:  # noqa: BLE001  (connection errors are failures too)
                self.stats.count(kind, "exception")
                self.stats.fail(f"{kind}: {type(e).__name__}: {e}")

    # -- kinds --
    def do_ask(self, t0):
        q, hist = self.rng.choice(ASK_QUESTIONS)
        body = json.dumps({"question": q, "history": hist}).encode()
        c = self.srv.conn()
        try:
            c.request("POST", self.srv.prefix + "/api/ask", body=body, headers=self.srv.headers(
                {"Content-Type": "application/json", "Accept": "text/event-stream"}))
            r = c.getresponse()
            if r.status == 503:
                r.read()
                self.stats.count("ask", 503)
                if not r.getheader("Retry-After"):
                    self.stats.fail("ask: 503 without a Retry-After header")
                # a polite client waits a little before trying again
                time.sleep(self.rng.uniform(0.05, 0.3))
                return
            if r.status != 200:
                data = r.read()
                self.stats.count("ask", r.status)
                self.stats.fail(f"ask {q!r}: HTTP {r.status}: {data[:200]!r}")
                return
            ctype = r.getheader("Content-Type") or ""
            if "text/event-stream" not in ctype:
                self.stats.count("ask", "bad")
                self.stats.fail(f"ask: 200 with Content-Type {ctype!r}")
                r.read()
                return
            events, answer, error = [], None, None
            for ev, data in read_sse(r):
                events.append(ev)
                if ev == "answer":
                    answer = json.loads(data)
                elif ev == "error":
                    error = data
            secs = time.monotonic() - t0
            if error is not None:
                self.stats.count("ask", "error_event")
                self.stats.fail(f"ask {q!r}: SSE error event {error[:200]}")
                return
            if answer is None:
                self.stats.count("ask", "no_answer")
                self.stats.fail(f"ask {q!r}: stream ended without an answer (events {events[-5:]})")
                return
            if events[-1] != "answer":
                self.stats.fail(f"ask {q!r}: events after the answer: {events[-3:]}")
            if "passages" not in events:
                self.stats.fail(f"ask {q!r}: no passages event before the answer: {events[:5]}")
            if not isinstance(answer.get("answer"), str) or not isinstance(answer.get("citations"), list) \
                    or not isinstance(answer.get("abstained"), bool):
                self.stats.fail(f"ask {q!r}: malformed answer {json.dumps(answer)[:200]}")
            self.stats.count("ask", 200, secs)
            with self.stats.lock:
                self.stats.answers += 1
                self.stats.abstained += bool(answer.get("abstained"))
        finally:
            c.close()

    def do_cancel(self, t0):
        """An ask whose client goes away mid-answer (after the first event), like the page's Stop button."""
        q, hist = self.rng.choice(ASK_QUESTIONS)
        c = self.srv.conn()
        try:
            c.request("POST", self.srv.prefix + "/api/ask", body=json.dumps({"question": q, "history": hist}).encode(),
                      headers=self.srv.headers({"Content-Type": "application/json", "Accept": "text/event-stream"}))
            r = c.getresponse()
            if r.status != 200:
                r.read()
                self.stats.count("cancel", r.status)
                if r.status != 503:
                    self.stats.fail(f"cancel-ask {q!r}: HTTP {r.status}")
                else:
                    time.sleep(self.rng.uniform(0.05, 0.3))
                return
            for ev, data in read_sse(r):
                if ev in ("passages", "token", "answer", "error"):
                    break
            time.sleep(self.rng.uniform(0.05, 0.5))  # mid-prefill or mid-decode
            self.stats.count("cancel", "closed", time.monotonic() - t0)
        finally:
            if c.sock:
                c.sock.close()
            c.close()

    def do_search(self, t0):
        with self.stats.lock:
            tokens = list(self.stats.uploads.values())
        q = self.rng.choice(tokens) if tokens and self.rng.random() < 0.25 else self.rng.choice(SEARCH_QUERIES)
        st, r, j, data = self.srv.json("GET", "/api/search?" + urllib.parse.urlencode({"q": q}))
        secs = time.monotonic() - t0
        self.stats.count("search", st, secs if st == 200 else None)
        if st != 200:
            self.stats.fail(f"search {q!r}: HTTP {st}: {data[:200]!r}")
        elif not isinstance(j, dict) or not isinstance(j.get("passages"), list):
            self.stats.fail(f"search {q!r}: malformed body {data[:200]!r}")

    def do_upload(self, t0):
        n = self.n_upload
        self.n_upload += 1
        name = f"load-{self.idx}-{n}.md"
        token = "zq" + "".join(self.rng.choice(string.ascii_lowercase) for _ in range(10))
        text = (f"# Load note {self.idx} {n}\n\n"
                f"This note was written by load client {self.idx} as upload number {n}. "
                f"Its unique code word is {token}. The code word {token} appears nowhere else.\n\n"
                f"The note has a second paragraph so that it is a real document with more than one sentence.\n")
        body, ctype = multipart([("file", name, text.encode(), "text/markdown")])
        st, r, j, data = self.srv.json("POST", "/api/documents", body=body, headers={"Content-Type": ctype})
        secs = time.monotonic() - t0
        self.stats.count("upload", st, secs if st == 200 else None)
        if st != 200:
            self.stats.fail(f"upload {name}: HTTP {st}: {data[:200]!r}")
            return
        files = (j or {}).get("files") or []
        if len(files) != 1 or files[0].get("name") != name or files[0].get("status") != "added":
            self.stats.fail(f"upload {name}: unexpected result {data[:300]!r}")
            return
        with self.stats.lock:
            self.stats.uploads[name] = token

    def do_list(self, t0):
        st, r, j, data = self.srv.json("GET", "/api/documents")
        secs = time.monotonic() - t0
        self.stats.count("list", st, secs if st == 200 else None)
        if st != 200:
            self.stats.fail(f"list: HTTP {st}: {data[:200]!r}")
        elif not isinstance(j, dict) or not isinstance(j.get("documents"), list):
            self.stats.fail(f"list: malformed body {data[:200]!r}")


def ask_once(srv, question):
    """POST /api/ask, waiting politely while the queue is full; returns the answer object or None."""
    for _ in range(30):
        c = srv.conn()
        try:
            c.request("POST", srv.prefix + "/api/ask", body=json.dumps({"question": question}).encode(),
                      headers=srv.headers({"Content-Type": "application/json", "Accept": "text/event-stream"}))
            r = c.getresponse()
            if r.status == 503:
                r.read()
                time.sleep(1)
                continue
            if r.status != 200:
                return None
            for ev, data in read_sse(r):
                if ev == "answer":
                    return json.loads(data)
            return None
        finally:
            c.close()
    return None


LOAD_NAME = re.compile(r"^load-\d+-\d+\.md$")


def list_documents(srv):
    st, r, j, data = srv.json("GET", "/api/documents")
    if st != 200 or not isinstance(j, dict):
        raise RuntimeError(f"GET /api/documents: HTTP {st}: {data[:200]!r}")
    return j["documents"]


def delete_load_docs(srv, names=None):
    """Delete uploaded load-*.md documents (only `names` when given); returns the failures."""
    failures = []
    for d in list_documents(srv):
        if not (d.get("uploaded") and LOAD_NAME.match(d.get("name", ""))):
            continue
        if names is not None and d["name"] not in names:
            continue
        st, r, j, data = srv.json("DELETE", "/api/documents/" + urllib.parse.quote(d["id"]))
        if st != 200:
            failures.append(f"DELETE {d['name']} ({d['id']}): HTTP {st}: {data[:200]!r}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="server root, e.g. http://127.0.0.1:8095")
    ap.add_argument("--key", default=None, help="API key, when the server has one")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pid", type=int, default=None, help="server pid, to sample its RSS (VmRSS)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cancel-percent", type=int, default=0, choices=range(0, 31), metavar="0..30",
                    help="percent of requests that are asks abandoned mid-answer (default 0; taken from the ask share)")
    ap.add_argument("--warm-after", type=float, default=10.0, help="seconds into the run for the 'warm' RSS sample")
    args = ap.parse_args()

    srv = Server(args.base, args.key)
    stats = Stats()
    failures = []

    st, r, j, data = srv.json("GET", "/api/health")
    if st != 200:
        print(f"FAIL: GET /api/health: HTTP {st}: {data[:200]!r}", file=sys.stderr)
        sys.exit(1)
    print(f"... server {args.base}: {j.get('documents')} documents, {j.get('passages')} passages, "
          f"queue {j.get('queue')}", flush=True)
    stale = delete_load_docs(srv)
    if stale:
        print(f"FAIL: could not remove stale load-* documents: {stale[:3]}", file=sys.stderr)
        sys.exit(1)
    if args.pid and rss_mib(args.pid) is None:
        print(f"FAIL: cannot read VmRSS of pid {args.pid}", file=sys.stderr)
        sys.exit(1)

    rss = {"start": rss_mib(args.pid), "warm": None, "end": None, "peak": rss_mib(args.pid)}
    start = time.monotonic()
    deadline = start + args.seconds
    done = threading.Event()

    def sampler():
        warm_at = start + min(args.warm_after, args.seconds / 2)
        while not done.is_set():
            v = rss_mib(args.pid)
            if v is not None:
                rss["peak"] = max(rss["peak"] or 0, v)
                if rss["warm"] is None and time.monotonic() >= warm_at:
                    rss["warm"] = v
                    print(f"... warm RSS {v} MiB", flush=True)
            done.wait(0.5)

    samp = threading.Thread(target=sampler, daemon=True)
    if args.pid:
        samp.start()
    print(f"... {args.clients} clients for {args.seconds:g} s (RSS start {rss['start']} MiB)", flush=True)
    weights = list(WEIGHTS)
    if args.cancel_percent > 0:
        # taken out of the ask share: those asks are abandoned mid-answer instead
        weights = [(k, w - args.cancel_percent if k == "ask" else w) for k, w in weights] + [("cancel", args.cancel_percent)]
    clients = [Client(i, srv, stats, deadline, args.seed * 1000 + i, weights) for i in range(args.clients)]
    for c in clients:
        c.start()
    last_report = time.monotonic()
    while any(c.is_alive() for c in clients):
        time.sleep(0.5)
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            with stats.lock:
                tot = {k: sum(v.values()) for k, v in stats.counts.items()}
            print(f"... t={last_report - start:.0f}s requests {tot} errors {stats.n_errors}", flush=True)
    ran = time.monotonic() - start
    time.sleep(2)
    done.set()
    if args.pid:
        samp.join()
        rss["end"] = rss_mib(args.pid)
        if rss["warm"] is None:
            rss["warm"] = rss["end"]
    print(f"... clients stopped after {ran:.1f} s; checking uploads", flush=True)

    # The server still answers, and nothing uploaded was lost.
    lost = []
    try:
        st, r, j, data = srv.json("GET", "/api/health")
        if st != 200:
            failures.append(f"health after the run: HTTP {st}")
        elif (j.get("queue") or {}).get("running") or (j.get("queue") or {}).get("waiting"):
            failures.append(f"queue not empty after the run: {j.get('queue')}")
        # The model still answers correctly after the load (catches a model left in a broken state).
        a = ask_once(srv, "Who is the harbour master?")
        if not a or "Brandt" not in a.get("answer", "") or a.get("abstained"):
            failures.append("after the run, 'Who is the harbour master?' is no longer answered: "
                            + (json.dumps({k: a.get(k) for k in ("answer", "abstained", "abstain_reason", "stop")})
                               if a else "no answer event"))
        else:
            print(f"... after the run the model still answers: {a['answer']!r}", flush=True)
        listed = {d["name"]: d for d in list_documents(srv)}
        lost = sorted(n for n in stats.uploads if n not in listed)
        for n in lost[:5]:
            failures.append(f"lost upload: {n} is not in /api/documents")
        for name in sorted(stats.uploads)[:5]:
            token = stats.uploads[name]
            st, r, j, data = srv.json("GET", "/api/search?" + urllib.parse.urlencode({"q": token}))
            hits = (j or {}).get("passages", []) if st == 200 else []
            paths = [p.get("path", "") for p in hits]
            if not any(p.get("path", "").endswith("/" + name) and token in p.get("text", "") for p in hits):
                failures.append(f"search for {token} does not find {name}: HTTP {st}, paths {paths[:3]}")
                if name not in lost:
                    lost.append(name)
    except Exception as e:  # noqa: BLE001
        failures.append(f"post-run check: {type(e).__name__}: {e}")

    # Clean up this run's uploads.
    try:
        failures += delete_load_docs(srv, set(stats.uploads))
        left = [d["name"] for d in list_documents(srv) if d["name"] in stats.uploads]
        if left:
            failures.append(f"load-* documents left after cleanup: {left[:5]}")
    except Exception as e:  # noqa: BLE001
        failures.append(f"cleanup: {type(e).__name__}: {e}")

    mem_ok = True
    if args.pid and rss["warm"] is not None and rss["end"] is not None:
        limit = rss["warm"] * 1.25 + 64
        if rss["end"] > limit:
            mem_ok = False
            failures.append(f"memory not flat: end RSS {rss['end']} MiB > warm {rss['warm']} * 1.25 + 64 = {limit:.1f} MiB")

    for f in failures:
        stats.fail(f)
    latency = {k: {"p50": percentile(v, 50), "p95": percentile(v, 95), "n": len(v)}
               for k, v in sorted(stats.latency.items())}
    summary = {
        "clients": args.clients,
        "cancel_percent": args.cancel_percent,
        "seconds": args.seconds,
        "elapsed": round(ran, 1),
        "requests": {k: dict(sorted(v.items())) for k, v in sorted(stats.counts.items())},
        "latency_ms": latency,
        "answers": stats.answers,
        "abstained": stats.abstained,
        "errors": stats.errors,
        "error_count": stats.n_errors,
        "uploads": len(stats.uploads),
        "lost_uploads": len(lost),
        "rss_mib": rss,
        "memory_flat": mem_ok if args.pid else None,
    }
    print("LOAD-SUMMARY " + json.dumps(summary, separators=(",", ":")), flush=True)
    if stats.n_errors or lost or not mem_ok:
        print(f"FAIL: {stats.n_errors} error(s), {len(lost)} lost upload(s)"
              + ("" if mem_ok else ", memory not flat"), file=sys.stderr, flush=True)
        sys.exit(1)
    if not args.pid:
        print("note: no --pid given, memory was not checked", flush=True)
    print("PASS load", flush=True)


if __name__ == "__main__":
    main()
