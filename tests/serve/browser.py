#!/usr/bin/env python3
"""Drive the `rag serve` page in headless Chromium (Selenium) like a user would.

    target/py/bin/python tests/serve/browser.py --base http://127.0.0.1:PORT [--key KEY] [--out DIR]

Asks a question and checks the cited answer, its sources and the passage viewer; checks the
"Not in the documents" state; uploads a document (whose text holds a <script> that must never
run), asks about it, then deletes it. Saves DIR/serve-page.png (first answer with its sources)
and DIR/serve-page-upload.png (the uploaded document answered). Exit 0 when all passed.
Needs /usr/bin/chromium and /usr/bin/chromedriver (no selenium-manager download).
"""
import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ANSWER_TIMEOUT = 60


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def step(msg):
    print(f"... {msg}", flush=True)


def ok(msg):
    print(f"ok  {msg}", flush=True)


def wait_for(driver, what, fn, timeout=15, poll=0.2):
    """Wait until fn(driver) is truthy; fail with `what` (and the page's state) otherwise."""
    try:
        # The page re-renders lists (documents, turns) while we look: a stale element just means "look again".
        return WebDriverWait(driver, timeout, poll_frequency=poll,
                             ignored_exceptions=[StaleElementReferenceException]).until(lambda d: fn(d))
    except TimeoutException:
        raise CheckFailed(f"timed out after {timeout} s waiting for {what}; {page_state(driver)}") from None


def page_state(driver):
    try:
        return "page state: " + repr(driver.execute_script("""
            const t = document.querySelectorAll('.turn'); const last = t[t.length - 1];
            return {health: document.getElementById('health').textContent,
                    keyForm: !document.getElementById('key-form').hidden,
                    lastTurn: last ? last.innerText.slice(0, 400) : null,
                    uploads: document.getElementById('upload-status').innerText.slice(0, 300),
                    documents: document.getElementById('documents').innerText.slice(0, 300)};"""))
    except WebDriverException as e:
        return f"(page state unavailable: {e.msg})"


def make_driver(profile_dir):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile_dir}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager is never asked to download anything.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_window_size(1280, 900)
    # Make the viewport itself 1280x900 (the window size includes the browser's own frame).
    try:
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        if inner != [1280, 900]:
            driver.set_window_size(1280 + 1280 - inner[0], 900 + 900 - inner[1])
    except WebDriverException:
        pass
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def last_turn(driver):
    turns = driver.find_elements(By.CSS_SELECTOR, "#conversation .turn")
    return turns[-1] if turns else None


def ask(driver, question):
    """Type a question, click Ask, wait for the answer to finish; return the last .turn element."""
    n_before = len(driver.find_elements(By.CSS_SELECTOR, "#conversation .turn"))
    wait_for(driver, "#ask to be enabled", lambda d: d.find_element(By.ID, "ask").is_enabled())
    q = driver.find_element(By.ID, "question")
    q.clear()
    q.send_keys(question)
    driver.find_element(By.ID, "ask").click()
    wait_for(driver, f"a new turn for {question!r}",
             lambda d: len(d.find_elements(By.CSS_SELECTOR, "#conversation .turn")) > n_before)
    turn = last_turn(driver)
    check(question in turn.find_element(By.CSS_SELECTOR, ".question").text,
          f"the new turn does not show the question {question!r}")
    wait_for(driver, f"the answer to {question!r} (.answer[data-done=true])",
             lambda d: turn.find_elements(By.CSS_SELECTOR, '.answer[data-done="true"]'),
             timeout=ANSWER_TIMEOUT)
    errs = turn.find_elements(By.CSS_SELECTOR, ".error-msg")
    check(not errs, f"the answer to {question!r} shows an error: {errs[0].text if errs else ''!r}")
    return turn


def screenshot(driver, path):
    check(driver.save_screenshot(path), f"could not save a screenshot to {path}")
    ok(f"screenshot {path}")


def js_errors(driver):
    """Uncaught JS errors from the console (network failures such as expected 401s are left out)."""
    try:
        logs = driver.get_log("browser")
    except WebDriverException:
        return []
    bad = []
    for e in logs:
        msg = e.get("message", "")
        if e.get("level") != "SEVERE" or "Failed to load resource" in msg:
            continue
        bad.append(msg)
    return bad


def unlock(driver, key):
    """With a key: the page must show its key form (the server answered 401), then accept the key."""
    if not key:
        return
    step("the page should ask for the API key")
    wait_for(driver, "#key-form to show (401 -> key prompt)",
             lambda d: d.find_element(By.ID, "key-form").is_displayed())
    inp = driver.find_element(By.ID, "api-key")
    inp.clear()
    inp.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, '#key-form button[type="submit"]').click()
    wait_for(driver, "#key-form to hide after the key", lambda d: not d.find_element(By.ID, "key-form").is_displayed())
    ok("API key entered")


def run(driver, base, key, out_dir, tmp_dir, state):
    step(f"open {base}/")
    driver.get(base + "/")
    check("rag" in driver.title, f"page title is {driver.title!r}")
    unlock(driver, key)
    health = wait_for(driver, "#health to show the model and passages",
                      lambda d: (lambda t: t if "passage" in t else None)(d.find_element(By.ID, "health").text))
    check("bad" not in (driver.find_element(By.ID, "health").get_attribute("class") or ""),
          f"#health is marked bad: {health!r}")
    ok(f"health: {health!r}")
    wait_for(driver, "#documents to list the corpus",
             lambda d: d.find_elements(By.CSS_SELECTOR, "#documents .document .name"))

    # ---- first question: cited answer, sources, passage viewer ----
    q1 = "Who is the harbour master?"
    step(f"ask {q1!r}")
    turn = ask(driver, q1)
    answer = turn.find_element(By.CSS_SELECTOR, ".answer").text
    check("Brandt" in answer, f"answer lacks 'Brandt': {answer!r}")
    check("abstained" not in (turn.find_element(By.CSS_SELECTOR, ".answer").get_attribute("class") or ""),
          "the harbour-master answer is styled as abstained")
    cites = turn.find_elements(By.CSS_SELECTOR, "button.cite")
    check(cites, f"no button.cite in the answer {answer!r}")
    sources = turn.find_elements(By.CSS_SELECTOR, ".sources .source")
    check(sources, "no .sources .source under the answer")
    src_text = " | ".join(s.text for s in sources)
    check("harbour-office.md" in src_text, f"sources do not name harbour-office.md: {src_text!r}")
    ok(f"answer {answer!r}, {len(cites)} cite button(s), sources: {src_text[:160]!r}")
    screenshot(driver, os.path.join(out_dir, "serve-page.png"))

    step("open the first citation")
    cites[0].click()
    wait_for(driver, "#passage to open", lambda d: d.find_element(By.ID, "passage").is_displayed())
    ptext = wait_for(driver, "#passage-text to contain 'Brandt'",
                     lambda d: (lambda t: t if "Brandt" in t else None)(d.find_element(By.ID, "passage-text").text))
    src = driver.find_element(By.ID, "passage-source").text
    check("harbour-office.md" in src, f"#passage-source does not name harbour-office.md: {src!r}")
    marks = driver.find_elements(By.CSS_SELECTOR, "#passage-text mark")
    ok(f"passage from {src.splitlines()[0]!r} ({len(ptext)} chars, {len(marks)} highlighted quote)")
    driver.find_element(By.ID, "passage-close").click()
    wait_for(driver, "#passage to close", lambda d: not d.find_element(By.ID, "passage").is_displayed())
    ok("passage closed")

    # ---- the same question limited to PDFs (the corpus has none): nothing to cite ----
    driver.find_element(By.ID, "new-conversation").click()
    wait_for(driver, "the conversation to clear",
             lambda d: not d.find_elements(By.CSS_SELECTOR, "#conversation .turn"))
    step(f"ask {q1!r} with the file-type filter on PDF")
    Select(driver.find_element(By.ID, "filter-type")).select_by_value("pdf")
    turn = ask(driver, q1)
    wrap = turn.find_element(By.CSS_SELECTOR, ".answer-wrap")
    check("abstained" in (wrap.get_attribute("class") or ""),
          f"with only PDFs allowed the answer is not abstained: {turn.text!r}")
    check(not turn.find_elements(By.CSS_SELECTOR, ".sources .source"),
          "with only PDFs allowed the answer lists sources")
    Select(driver.find_element(By.ID, "filter-type")).select_by_value("")
    ok("filtered to PDFs: abstained, no sources; filter reset")

    # ---- a question the documents do not answer ----
    driver.find_element(By.ID, "new-conversation").click()
    wait_for(driver, "the conversation to clear",
             lambda d: not d.find_elements(By.CSS_SELECTOR, "#conversation .turn"))
    q2 = "What is the boiling point of mercury?"
    step(f"ask {q2!r} (should show 'Not in the documents')")
    turn = ask(driver, q2)
    wrap = turn.find_element(By.CSS_SELECTOR, ".answer-wrap")
    check("abstained" in (wrap.get_attribute("class") or ""), f"not shown as abstained: {turn.text!r}")
    titles = turn.find_elements(By.CSS_SELECTOR, ".abstain-title")
    check(titles and titles[0].is_displayed() and "Not in the documents" in titles[0].text,
          f"no visible 'Not in the documents' title: {turn.text!r}")
    check(not turn.find_elements(By.CSS_SELECTOR, ".sources .source"), "an abstained answer lists sources")
    ok("abstention shown as 'Not in the documents'")

    # ---- upload a document, ask about it ----
    fname = f"lighthouse-{secrets.token_hex(4)}.md"
    fpath = os.path.join(tmp_dir, fname)
    with open(fpath, "w", encoding="utf-8") as f:
        f.write("# Lighthouse\n\n"
                "The Vellmar lighthouse stands on the rocks north of the harbour mouth. "
                "It was built in 1887 from grey granite.\n\n"
                "The Vellmar lighthouse keeper is Ottilie Sandqvist. "
                "She climbs the 112 steps every evening to light the lamp.\n\n"
                "<script>window.__pwned=1</script>\n\n"
                "Visitors may climb the tower on Sundays between May and September.\n")
    step(f"upload {fname}")
    state["uploaded"] = fname
    driver.find_element(By.ID, "upload").send_keys(fpath)
    sel = f'.upload-result[data-status]'

    def upload_result(d):
        for r in d.find_elements(By.CSS_SELECTOR, sel):
            names = r.find_elements(By.CSS_SELECTOR, ".fname")
            if names and names[0].text == fname:
                return r
        return None

    res = wait_for(driver, f"an upload result for {fname}", upload_result, timeout=90)
    status = res.get_attribute("data-status")
    check(status == "added", f"upload status is {status!r}, want 'added': {res.text!r}")
    ok(f"upload result: {res.text!r}")

    def doc_item(d):
        for li in d.find_elements(By.CSS_SELECTOR, "#documents .document"):
            if li.find_element(By.CSS_SELECTOR, ".name").text == fname:
                return li
        return None

    wait_for(driver, f"{fname} in #documents", doc_item)
    ok(f"{fname} listed in #documents")

    driver.find_element(By.ID, "new-conversation").click()
    wait_for(driver, "the conversation to clear",
             lambda d: not d.find_elements(By.CSS_SELECTOR, "#conversation .turn"))
    q3 = "Who is the Vellmar lighthouse keeper?"
    step(f"ask {q3!r}")
    turn = ask(driver, q3)
    answer = turn.find_element(By.CSS_SELECTOR, ".answer").text
    check("Sandqvist" in answer, f"answer lacks 'Sandqvist': {answer!r}")
    src_text = " | ".join(s.text for s in turn.find_elements(By.CSS_SELECTOR, ".sources .source"))
    check(fname in src_text, f"sources do not name {fname}: {src_text!r}")
    ok(f"answer {answer!r} from {fname}")

    # The uploaded text holds a <script>: it must show as text and never run.
    cite = turn.find_elements(By.CSS_SELECTOR, "button.cite")
    check(cite, "no button.cite in the lighthouse answer")
    cite[0].click()
    wait_for(driver, "#passage to open", lambda d: d.find_element(By.ID, "passage").is_displayed())
    ptext = wait_for(driver, "#passage-text to contain 'Sandqvist'",
                     lambda d: (lambda t: t if "Sandqvist" in t else None)(d.find_element(By.ID, "passage-text").text))
    check("<script>window.__pwned=1</script>" in ptext,
          f"the passage does not show the document's <script> line as text: {ptext!r}")
    n_scripts = driver.execute_script("return document.querySelectorAll('#passage script, #conversation script').length")
    check(n_scripts == 0, f"{n_scripts} <script> element(s) made it into the DOM from document text")
    driver.find_element(By.ID, "passage-close").click()
    wait_for(driver, "#passage to close", lambda d: not d.find_element(By.ID, "passage").is_displayed())
    pwned = driver.execute_script("return typeof window.__pwned")
    check(pwned == "undefined", f"document text ran as script: typeof window.__pwned = {pwned!r}")
    ok("document <script> shown as text, never run")
    screenshot(driver, os.path.join(out_dir, "serve-page-upload.png"))

    # ---- delete the uploaded document ----
    step(f"delete {fname}")
    doc_id = wait_for(driver, f"{fname} in #documents", 
                      lambda d: (lambda li: li and li.get_attribute("data-id"))(doc_item(d)))
    wait_for(driver, f"the delete button of {fname}", lambda d: d.find_element(
        By.CSS_SELECTOR, f'#documents .document[data-id="{doc_id}"] button.delete').click() or True)
    alert = WebDriverWait(driver, 10).until(EC.alert_is_present())
    check(fname in alert.text, f"the confirm does not name the file: {alert.text!r}")
    alert.accept()
    wait_for(driver, f"{fname} to leave #documents", lambda d: doc_item(d) is None, timeout=30)
    health = wait_for(driver, "#health to update", lambda d: d.find_element(By.ID, "health").text)
    state["uploaded"] = None
    ok(f"deleted; health now {health!r}")

    errs = js_errors(driver)
    check(not errs, f"JavaScript errors in the console: {errs[:5]}")
    pwned = driver.execute_script("return typeof window.__pwned")
    check(pwned == "undefined", f"typeof window.__pwned = {pwned!r} at the end")


def api_cleanup(base, key, name):
    """After a failure: delete the uploaded test document through the API."""
    hd = {"Authorization": "Bearer " + key} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(base + "/api/documents", headers=hd), timeout=30) as r:
            docs = json.load(r)["documents"]
        for d in docs:
            if d.get("name") == name:
                req = urllib.request.Request(base + "/api/documents/" + urllib.parse.quote(d["id"]),
                                             method="DELETE", headers=hd)
                urllib.request.urlopen(req, timeout=60).close()
                print(f"(cleanup: deleted {name} through the API)", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        print(f"(cleanup of {name} failed: {e})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="server root, e.g. http://127.0.0.1:8095")
    ap.add_argument("--key", default=None, help="API key, when the server has one")
    ap.add_argument("--out", default="target", help="folder for the screenshots (default: target)")
    args = ap.parse_args()
    base = args.base.rstrip("/")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    tmp_dir = tempfile.mkdtemp(prefix="rag-browser-")
    driver = None
    code = 0
    state = {"uploaded": None}
    try:
        driver = make_driver(os.path.join(tmp_dir, "profile"))
        run(driver, base, args.key, args.out, tmp_dir, state)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
        code = 1
    except WebDriverException as e:
        print(f"FAIL: WebDriver error: {e.msg or e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if code and driver is not None:
            try:
                p = os.path.join(args.out, "serve-page-fail.png")
                driver.save_screenshot(p)
                print(f"(screenshot of the failure: {p})", file=sys.stderr)
            except WebDriverException:
                pass
        if driver is not None:
            try:
                driver.quit()
            except WebDriverException:
                pass
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if state["uploaded"]:
            api_cleanup(base, args.key, state["uploaded"])
    if code == 0:
        print(f"PASS browser ({time.time() - t0:.1f} s)", flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
