#!/usr/bin/env python3
"""Check the layering that docs/ARCHITECTURE.md describes; exit 1 on any breach.

1. Crates: rag-ingest and rag-index do not depend on candle (directly or not); rag-model
   depends on no crate of the workspace (read from `cargo metadata`).
2. Modules: no cycle between the modules (files) of any crate. A module depends on another
   when its code names it: `crate::a::b` paths, `super::` paths, paths through a child module
   (`quant::gemm_x8`), and `use` lists. Declaring a child (`mod a;`) is containment, not a
   dependency; a facade's `pub use a::X` is. Comments, strings and `#[cfg(test)]` modules are
   ignored. Inline modules (`mod fma { .. }`) belong to their file.

    scripts/check-architecture.py            # from the repository root
    scripts/check-architecture.py --graph    # also print each crate's module graph
"""
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_CRATES = {"rag", "rag-ingest", "rag-index", "rag-model"}
NO_CANDLE = {"rag-ingest", "rag-index"}
NO_WORKSPACE_DEPS = {"rag-model"}


def check_crates():
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", "x86_64-unknown-linux-gnu"], cwd=ROOT
        )
    )
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    name_of = {i: p["name"] for i, p in pkgs.items()}

    def normal_deps(pid):
        # Dependencies used by the library and binaries (not dev or build).
        for d in nodes[pid]["deps"]:
            if any(k["kind"] is None for k in d["dep_kinds"]):
                yield d["pkg"]

    def closure(pid):
        seen, todo = set(), [pid]
        while todo:
            for d in normal_deps(todo.pop()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    problems = []
    for pid, name in name_of.items():
        if name in NO_CANDLE:
            bad = sorted({name_of[d] for d in closure(pid) if name_of[d].startswith("candle")})
            if bad:
                problems.append(f"{name} depends on {', '.join(bad)}")
        if name in NO_WORKSPACE_DEPS:
            bad = sorted({name_of[d] for d in normal_deps(pid) if name_of[d] in WORKSPACE_CRATES})
            if bad:
                problems.append(f"{name} depends on workspace crate(s) {', '.join(bad)}")
    return problems


def strip(text):
    """Source without comments and string or char literals (their contents could look like
    paths)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            out.append('""')
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 2)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(text):
    """Remove `#[cfg(test)] mod name { ... }` blocks."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
        if not m:
            return text
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]


MOD_DECL = re.compile(r"(?:#\[([^\]]*)\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


TEST_ONLY = set()  # module paths declared under #[cfg(test)]


def module_tree(root_file):
    """{module path tuple: file} for the modules declared from `root_file`."""
    files = {(): root_file}
    todo = [()]
    while todo:
        path = todo.pop()
        f = files[path]
        src = drop_test_modules(strip(f.read_text()))
        for m in MOD_DECL.finditer(src):
            attrs, name = m.group(0), m.group(2)
            if "cfg(test)" in attrs:
                TEST_ONLY.add(path + (name,))
                continue
            if f.name in ("lib.rs", "main.rs", "mod.rs"):
                base = f.parent
            else:
                base = f.parent / f.stem
            child = base / f"{name}.rs"
            if not child.exists():
                child = base / name / "mod.rs"
            if child.exists():
                files[path + (name,)] = child
                todo.append(path + (name,))
    return files


PATH = re.compile(r"\b((?:crate|super|self|[a-z_][a-z0-9_]*)(?:\s*::\s*(?:[A-Za-z_][A-Za-z0-9_]*|\{))+)")


def use_paths(src):
    """Every path the source names, with `use` lists expanded."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", src):
        tree = re.sub(r"\s+as\s+", " as ", m.group(1)).replace("\n", "")
        paths.extend((p, m.start()) for p, _ in expand(tree.replace(" as ", "@as@").replace(" ", "").replace("@as@", " as ")))
    body = re.sub(r"\buse\s+[^;]+;", "", src)
    for m in PATH.finditer(body):
        p = re.sub(r"\s+", "", m.group(1)).rstrip(":{")
        paths.append((p.split("::"), m.start()))
    return paths


def expand(tree, prefix=()):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (positions unknown: -1)."""
    out = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:i])
            start = i + 1
    parts.append(tree[start:])
    for part in filter(None, parts):
        if "{" in part:
            head, inner = part.split("{", 1)
            head = [s for s in head.split("::") if s]
            out.extend(expand(inner[:-1], prefix + tuple(head)))
        else:
            segs = [s for s in part.split(" as ")[0].split("::") if s]
            out.append((list(prefix) + segs, -1))
    return out


def inline_scope(src, pos):
    """The inline modules (`mod x { .. }`) enclosing `pos`."""
    stack, depth = [], 0
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{|\{|\}", src[: max(pos, 0)]):
        if m.group(1):
            depth += 1
            stack.append((m.group(1), depth))
        elif m.group(0) == "{":
            depth += 1
        else:
            if stack and stack[-1][1] == depth:
                stack.pop()
            depth -= 1
    return tuple(name for name, _ in stack)


def module_graph(files):
    mods = set(files)
    edges = {m: set() for m in mods}
    for mod, f in files.items():
        src = drop_test_modules(strip(f.read_text()))
        children = {p[-1] for p in mods if len(p) == len(mod) + 1 and p[: len(mod)] == mod}
        for segs, pos in use_paths(src):
            scope = mod + inline_scope(src, pos)
            if segs[0] == "crate":
                target, rest = (), segs[1:]
            elif segs[0] in ("super", "self"):
                target, rest = scope, segs
                while rest and rest[0] in ("super", "self"):
                    if rest[0] == "super":
                        target = target[:-1]
                    rest = rest[1:]
            elif segs[0] in children:
                target, rest = mod, segs
            else:
                continue  # another crate, a type, a variant
            path = tuple(target)
            if rest and path + (rest[0],) in TEST_ONLY:
                continue  # e.g. a crash point compiled only into tests
            for s in rest:
                if path + (s,) in mods:
                    path = path + (s,)
                else:
                    break
            # An inline module's path resolves to its file.
            while path not in mods:
                path = path[:-1]
            if path != mod:
                edges[mod].add(path)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(crate, path):
    return "::".join((crate,) + path)


def main():
    show = "--graph" in sys.argv
    problems = check_crates()
    roots = {
        "rag": ROOT / "src/lib.rs",
        "rag (bin)": ROOT / "src/main.rs",
        "rag_ingest": ROOT / "ingest/src/lib.rs",
        "rag_index": ROOT / "index/src/lib.rs",
        "rag_model": ROOT / "model/src/lib.rs",
    }
    total = 0
    for crate, root in roots.items():
        files = module_tree(root)
        edges = module_graph(files)
        total += len(files)
        if show:
            print(f"{crate}: {len(files)} modules")
            for m in sorted(edges):
                deps = ", ".join(name(crate, d) for d in sorted(edges[m]))
                print(f"  {name(crate, m)} -> {deps or '-'}")
        for comp in cycles(edges):
            problems.append(
                f"module cycle in {crate}: " + " <-> ".join(name(crate, m) for m in sorted(comp))
            )
    if problems:
        print("architecture check failed:")
        for p in problems:
            print(f"  - {p}")
        sys.exit(1)
    print(
        f"architecture ok: {total} modules in {len(roots)} crate roots, no module cycle; "
        "rag-ingest and rag-index without candle; rag-model without workspace crates"
    )


if __name__ == "__main__":
    main()
