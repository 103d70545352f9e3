#!/usr/bin/env python3
"""Fails when a module of src/ depends on itself through others (a module circle).

Every file is a module; `crate::a::b` and `super::x` paths outside comments and `#[cfg(test)]`
test modules are its dependencies, resolved to the longest path that names a module. Prints
the circles it finds and exits 1, or prints nothing and exits 0.
"""
import glob
import re
import sys


def module_of(path):
    parts = path[len("src/"):-len(".rs")].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def main():
    files = glob.glob("src/**/*.rs", recursive=True)
    modules = {"::".join(module_of(p)): p for p in files}
    graph = {}
    for name, path in modules.items():
        code = "\n".join(
            line for line in open(path).read().split("\n") if not line.strip().startswith("//")
        )
        code = re.split(r"#\[cfg\(test\)\]\s*mod tests", code)[0]
        here = module_of(path)
        parent = here if path.endswith("mod.rs") else here[:-1]
        paths = [p.split("::") for p in re.findall(r"crate::((?:\w+::)*\w+)", code)]
        paths += [parent[:-1] + p.split("::") for p in re.findall(r"super::((?:\w+::)*\w+)", code)]
        deps = set()
        for parts in paths:
            for k in range(len(parts), 0, -1):
                candidate = "::".join(parts[:k])
                if candidate in modules:
                    deps.add(candidate)
                    break
        deps.discard(name)
        deps.discard("")
        graph[name] = deps

    # Tarjan's strongly connected components: a component of more than one module is a circle.
    index, low, stack, on_stack, circles = {}, {}, [], set(), []
    sys.setrecursionlimit(100_000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    for circle in circles:
        print("module circle:", " ".join(circle))
        for a in circle:
            for b in sorted(graph[a]):
                if b in circle:
                    print(f"  {a} -> {b}")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
