#!/usr/bin/env python3
"""Check the documentation's excerpts of mamlc's output against the real output.

Usage: check_excerpts.py ROOT BINDIR [FILE.md ...]

In README.md and docs/*.md under ROOT (or the FILEs given), a fenced code
block just below a line

    <!-- check: COMMAND -->

is an excerpt of COMMAND's standard output, run in ROOT with BINDIR first
on PATH (so `mamlc ...` is the built compiler).  The block must equal the
output line by line, except that a line `...` stands for any number of
lines (none included).  Prints each excerpt that differs, with the first
line that does, as FILE:LINE: message; exits 1 if any differs."""
import glob
import os
import re
import subprocess
import sys

MARK = re.compile(r"^<!-- check: (.*) -->\s*$")


def excerpts(path):
    """(line of the mark, command, line of the block, the block's lines)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = MARK.match(line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or not lines[j].startswith("```"):
            yield i + 1, m.group(1), None, None
            continue
        k = j + 1
        while k < len(lines) and not lines[k].startswith("```"):
            k += 1
        yield i + 1, m.group(1), j + 2, lines[j + 1:k]


def matches(want, got):
    """Whether got matches want, `...` lines matching any run of lines;
    else the index into want of the first line that cannot match."""
    # Dynamic programming over (want line, got line): fine for excerpts.
    n, m = len(want), len(got)
    reach = [[False] * (m + 1) for _ in range(n + 1)]
    reach[0][0] = True
    best = 0
    for i in range(n + 1):
        for j in range(m + 1):
            if not reach[i][j]:
                continue
            best = max(best, i)
            if i == n:
                continue
            if want[i] == "...":
                reach[i + 1][j] = True
                if j < m:
                    reach[i][j + 1] = True
            elif j < m and want[i] == got[j]:
                reach[i + 1][j + 1] = True
    return reach[n][m], min(best, n - 1)


def check(root, bindir, files):
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    problems, count = [], 0
    for path in files:
        rel = os.path.relpath(path, root)
        for mark, command, at, want in excerpts(path):
            count += 1
            if want is None:
                problems.append(f"{rel}:{mark}: a check mark without a code block below it")
                continue
            r = subprocess.run(command, shell=True, cwd=root, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{rel}:{mark}: `{command}` failed ({r.returncode}): {r.stderr.strip()}")
                continue
            got = r.stdout.rstrip("\n").split("\n")
            ok, bad = matches(want, got)
            if not ok:
                problems.append(f"{rel}:{at + bad}: the excerpt of `{command}` differs from its output here: "
                                f"{want[bad]!r}")
    return problems, count


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root, bindir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    files = sys.argv[3:] or [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))
    problems, count = check(root, bindir, files)
    for p in problems:
        print(p)
    print(f"check_excerpts.py: {count} excerpt(s), {len(problems)} differing")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
