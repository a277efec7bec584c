#!/usr/bin/env python3
"""Print lacquer's module graph (top-level modules of src/, and cache's submodules) from the
`use crate::...` lines of each file, and exit 1 if it has a cycle. Tests are left out.
    python3 scripts/module_graph.py [--dot]"""
import os, re, sys

SRC = os.path.join(os.path.dirname(__file__), "..", "src")

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    # group at the top level, except cache/, whose parts are layered themselves
    if rel and rel[0] == "cache" and len(rel) > 1:
        return "cache::" + rel[1]
    return rel[0] if rel else "lib"

def uses(text):
    text = text.split("#[cfg(test)]")[0]
    for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
        parts = m.group(1).split("::")
        if parts[0] == "cache" and len(parts) > 1 and parts[1][0].islower():
            yield "cache::" + parts[1]
        else:
            yield parts[0]

edges = {}
for root, _, files in os.walk(SRC):
    for f in files:
        if f.endswith(".rs"):
            p = os.path.join(root, f)
            a = module_of(p)
            text = open(p).read()
            found = list(uses(text))
            # a file directly in cache/ names its siblings as super::x
            if os.path.dirname(os.path.relpath(p, SRC)) == "cache":
                body = text.split("#[cfg(test)]")[0]
                found += ["cache::" + m for m in re.findall(r"\bsuper::(\w+)", body)]
            for b in found:
                if b != a and not (a.startswith(b + "::") or b.startswith(a + "::")):
                    edges.setdefault(a, set()).add(b)

if "--dot" in sys.argv:
    print("digraph lacquer {")
    for a in sorted(edges):
        for b in sorted(edges[a]):
            print(f'  "{a}" -> "{b}";')
    print("}")
else:
    for a in sorted(edges):
        print(f"{a} -> {', '.join(sorted(edges[a]))}")

# cycle search
state, stack, cycles = {}, [], []
def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(edges.get(n, ())):
        if state.get(m) == 1:
            cycles.append(stack[stack.index(m):] + [m])
        elif m not in state:
            visit(m)
    stack.pop()
    state[n] = 2
for n in sorted(edges):
    if n not in state:
        visit(n)
for c in cycles:
    print("cycle: " + " -> ".join(c), file=sys.stderr)
sys.exit(1 if cycles else 0)
