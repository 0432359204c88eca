#!/usr/bin/env python3
"""Drive `rag serve`'s OpenAI-compatible API (/v1) with the official `openai` client.

    target/py/bin/python tests/serve/openai_client.py --base http://127.0.0.1:PORT [--key KEY]

Exits 0 when every check passed; on the first failure prints `FAIL: ...` and exits 1.
Checks structure and sources; exact wording only for facts the demo corpus pins down
(examples/corpus: the harbour master is Anneliese Brandt, harbour-office.md).
"""
import argparse
import math
import sys
import time

import openai
from openai import OpenAI


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def step(msg):
    print(f"... {msg}", flush=True)


def ok(msg):
    print(f"ok  {msg}", flush=True)


def rag_of(obj):
    """The extra top-level `rag` field of a completion or chunk (None when absent)."""
    extra = getattr(obj, "model_extra", None) or {}
    if "rag" in extra:
        return extra["rag"]
    return getattr(obj, "rag", None)


def short(s, n=160):
    s = str(s)
    return s if len(s) <= n else s[:n] + "…"


def expect_error(cls, fn, what):
    try:
        r = fn()
    except cls as e:
        ok(f"{what} -> {cls.__name__} (HTTP {getattr(e, 'status_code', '?')})")
        return e
    except openai.APIStatusError as e:
        raise CheckFailed(f"{what}: expected {cls.__name__}, got {type(e).__name__} "
                          f"HTTP {e.status_code}: {short(e.response.text, 300)}")
    except Exception as e:  # noqa: BLE001
        raise CheckFailed(f"{what}: expected {cls.__name__}, got {type(e).__name__}: {short(e, 300)}")
    raise CheckFailed(f"{what}: expected {cls.__name__}, but the call succeeded: {short(r, 300)}")


def citation_paths(rag):
    return [str(c.get("path", "")) for c in (rag.get("citations") or [])]


def run(base, key):
    base = base.rstrip("/")
    client = OpenAI(base_url=base + "/v1", api_key=key or "none", timeout=120.0, max_retries=2)
    # For error checks: no retries, so a wrong status is seen as-is.
    strict = client.with_options(max_retries=0)

    # ---- models ----
    step("models.list()")
    models = [m.id for m in client.models.list()]
    check("rag" in models, f"models.list() lacks 'rag': {models}")
    others = [m for m in models if m != "rag"]
    check(others, f"models.list() has no second (closed-book) model: {models}")
    closed_model = others[0]
    ok(f"models: {models}")

    # ---- grounded answer ----
    q1 = "Who is the harbour master?"
    step(f"chat.completions.create(model='rag', {q1!r})")
    t0 = time.time()
    c = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": q1}])
    check(c.object == "chat.completion", f"object is {c.object!r}, want 'chat.completion'")
    check(c.choices and c.choices[0].message.role == "assistant", f"no assistant choice: {short(c, 300)}")
    answer1 = c.choices[0].message.content or ""
    check("Anneliese Brandt" in answer1, f"answer lacks 'Anneliese Brandt': {answer1!r}")
    rag = rag_of(c)
    check(isinstance(rag, dict), f"completion has no `rag` object (model_extra={c.model_extra!r})")
    check(rag.get("abstained") is False, f"rag.abstained is {rag.get('abstained')!r}, want False")
    paths = citation_paths(rag)
    check(any(p.endswith("harbour-office.md") for p in paths),
          f"no citation of harbour-office.md: {paths}")
    check(isinstance(rag.get("passages"), list) and rag["passages"], "rag.passages is empty")
    check(isinstance(rag.get("quotes"), list), f"rag.quotes is not a list: {rag.get('quotes')!r}")
    check(isinstance(rag.get("standalone"), str) and rag["standalone"], "rag.standalone missing")
    if c.usage is not None:
        check(c.usage.completion_tokens >= 0 and c.usage.prompt_tokens >= 0, f"odd usage: {c.usage}")
    ok(f"answer {answer1!r} cites {[p.rsplit('/', 1)[-1] for p in paths]} ({time.time() - t0:.1f} s)")

    # ---- streaming ----
    step("the same, stream=True")
    stream = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": q1}], stream=True)
    text, chunks, last, finish = "", 0, None, None
    for ch in stream:
        chunks += 1
        check(ch.object == "chat.completion.chunk", f"chunk object is {ch.object!r}")
        for choice in ch.choices:
            if choice.delta and choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
        last = ch
    check(chunks >= 1 and last is not None, "the stream had no chunks")
    check("Brandt" in text, f"streamed text lacks 'Brandt': {text!r}")
    check(finish is not None, "no chunk carried a finish_reason")
    srag = rag_of(last)
    check(isinstance(srag, dict), f"the last chunk carries no `rag` object: {short(last, 300)}")
    spaths = citation_paths(srag)
    check(any(p.endswith("harbour-office.md") for p in spaths), f"streamed rag.citations: {spaths}")
    ok(f"{chunks} chunks, text {text!r}, finish_reason={finish}")

    # ---- follow-up rewritten to a standalone question ----
    q2 = "Who designed the Kessel Harbour Bridge?"
    step(f"{q2!r}, then the follow-up 'When did it open?'")
    c2 = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": q2}])
    answer2 = c2.choices[0].message.content or ""
    check(answer2.strip(), "empty answer to the bridge question")
    if "Okonkwo" not in answer2:
        print(f"note: bridge answer does not name Marta Okonkwo: {answer2!r}", flush=True)
    c3 = client.chat.completions.create(model="rag", messages=[
        {"role": "user", "content": q2},
        {"role": "assistant", "content": answer2},
        {"role": "user", "content": "When did it open?"},
    ])
    answer3 = c3.choices[0].message.content or ""
    rag3 = rag_of(c3)
    check(isinstance(rag3, dict), "follow-up completion has no `rag` object")
    standalone = str(rag3.get("standalone") or "")
    check("kessel harbour bridge" in standalone.lower(),
          f"rag.standalone does not mention the bridge: {standalone!r}")
    check(answer3.strip(), "empty answer to the follow-up")
    ok(f"standalone {standalone!r} -> {answer3!r}")

    # ---- abstention ----
    q4 = "What is the boiling point of mercury?"
    step(f"out-of-corpus question {q4!r}")
    c4 = client.chat.completions.create(model="rag", messages=[{"role": "user", "content": q4}])
    rag4 = rag_of(c4)
    check(isinstance(rag4, dict), "abstaining completion has no `rag` object")
    check(rag4.get("abstained") is True, f"rag.abstained is {rag4.get('abstained')!r}, want True "
          f"(answer {c4.choices[0].message.content!r})")
    ok(f"abstained: {c4.choices[0].message.content!r}")

    # ---- closed book ----
    step(f"closed book, model={closed_model!r}")
    c5 = client.chat.completions.create(model=closed_model, max_tokens=48,
                                        messages=[{"role": "user", "content": "Say hello in one short sentence."}])
    content5 = c5.choices[0].message.content or ""
    check(content5.strip(), f"closed-book completion is empty: {short(c5, 300)}")
    check(rag_of(c5) is None, f"closed-book completion carries a `rag` field: {short(rag_of(c5), 200)}")
    ok(f"closed book: {content5!r}")

    # ---- embeddings ----
    step("embeddings.create(['harbour bridge', 'ferry timetable'])")
    e = client.embeddings.create(model="rag", input=["harbour bridge", "ferry timetable"])
    check(len(e.data) == 2, f"want 2 embeddings, got {len(e.data)}")
    check([d.index for d in e.data] == [0, 1], f"indexes are {[d.index for d in e.data]}")
    v0, v1 = e.data[0].embedding, e.data[1].embedding
    check(len(v0) == len(v1) and len(v0) > 100, f"vector lengths {len(v0)}, {len(v1)}")
    for i, v in enumerate((v0, v1)):
        norm = math.sqrt(sum(x * x for x in v))
        check(abs(norm - 1.0) <= 1e-3, f"embedding {i} has norm {norm}, want 1")
    check(v0 != v1, "the two embeddings are identical")
    ok(f"2 x {len(v0)} floats, unit norm")

    # ---- errors ----
    step("error cases")
    expect_error(openai.NotFoundError, lambda: strict.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": q1}]), "model='no-such-model'")
    expect_error(openai.BadRequestError, lambda: strict.chat.completions.create(
        model="rag", messages=[]), "empty messages list")
    expect_error(openai.BadRequestError, lambda: strict.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "   "}]), "empty question")
    if key:
        bad = OpenAI(base_url=base + "/v1", api_key=key + "-wrong", max_retries=0, timeout=30.0)
        expect_error(openai.AuthenticationError, lambda: bad.models.list(), "wrong API key (models.list)")
        expect_error(openai.AuthenticationError, lambda: bad.chat.completions.create(
            model="rag", messages=[{"role": "user", "content": q1}]), "wrong API key (chat)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="server root, e.g. http://127.0.0.1:8095")
    ap.add_argument("--key", default=None, help="API key, when the server has one")
    args = ap.parse_args()
    t0 = time.time()
    try:
        run(args.base, args.key)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except openai.APIStatusError as e:
        print(f"FAIL: unexpected HTTP {e.status_code} from {e.request.method} {e.request.url}: "
              f"{short(e.response.text, 400)}", file=sys.stderr, flush=True)
        sys.exit(1)
    except openai.OpenAIError as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"PASS openai_client ({time.time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
