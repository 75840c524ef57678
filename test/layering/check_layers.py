#!/usr/bin/env python3
"""Check the include graph of mamlc's sources against its layers.

Usage: check_layers.py ROOT

Every quoted #include of a C source or header (.c, .h, .y, .l) in a layer's
folder must name a header of that folder or of a layer it stands on:

    tools/     the drivers: everything below
    frontend/  .mdl text to IR           ir/, base/
    passes/    IR to IR                  ir/, base/
    backend/   IR to machine code        ir/, base/
    ir/        the IR and its text       base/
    base/      diagnostics, arenas       nothing
    runtime/   linked into train.so      nothing (it stands alone)

Below the frontend, no file names the frontend's types (Model, ModelParam,
ModelTask, ...), not even in a comment: the passes and backends see only IR.
Prints each violation as FILE:LINE: message; exits 1 if there is any."""
import os
import re
import sys

LAYERS = {
    "base": [],
    "ir": ["base"],
    "frontend": ["ir", "base"],
    "passes": ["ir", "base"],
    "backend": ["ir", "base"],
    "runtime": [],
    "tools": ["frontend", "passes", "backend", "runtime", "ir", "base"],
}
BELOW_FRONTEND = ["base", "ir", "passes", "backend", "runtime"]
FRONTEND_TYPES = re.compile(r"\b(Model|ModelParam|ModelTask|ModelDim|ModelOptions|TaskArg|ParamInit)\b")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCES = (".c", ".h", ".y", ".l")


def sources(root, layer):
    for dirpath, _, names in os.walk(os.path.join(root, layer)):
        for name in sorted(names):
            if name.endswith(SOURCES):
                yield os.path.join(dirpath, name)


def check(root):
    problems = []
    for layer, below in LAYERS.items():
        allowed = {layer, *below}
        for path in sources(root, layer):
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().split("\n")
            for no, line in enumerate(lines, 1):
                m = INCLUDE.match(line)
                if m:
                    target = os.path.normpath(os.path.join(os.path.dirname(rel), m.group(1)))
                    folder = target.split(os.sep)[0]
                    if folder in LAYERS and folder not in allowed:
                        problems.append(f"{rel}:{no}: {layer}/ includes {target}: "
                                        f"{layer}/ may include only {', '.join(sorted(allowed))}")
                    elif folder not in LAYERS and folder != layer and target.startswith(".."):
                        problems.append(f"{rel}:{no}: {layer}/ includes {target}, outside the layers")
                if layer in BELOW_FRONTEND:
                    t = FRONTEND_TYPES.search(line)
                    if t:
                        problems.append(f"{rel}:{no}: {layer}/ names the frontend's type '{t.group(1)}'")
    return problems


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    missing = [layer for layer in LAYERS if not os.path.isdir(os.path.join(root, layer))]
    if missing:
        sys.exit(f"check_layers.py: {root} has no folder {', '.join(missing)}")
    problems = check(root)
    for p in problems:
        print(p)
    print(f"check_layers.py: {len(problems)} violation(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
