#!/usr/bin/env python3
"""Check that two runs of mamlc evaluated the same parameters on the same
held-out tasks: the "eval" lists of their --report files are equal to the
last bit (the reports print 17 significant digits), and so are the
"held-out evaluation" blocks of their printed output.  Exits 1 with the
difference on stderr otherwise.

usage: same_eval.py A.json B.json A.txt B.txt
"""
import json
import math
import sys


def held_out(path):
    """The lines of the held-out evaluation block of a mamlc output."""
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("held-out evaluation"):
            block = [line]
            for rest in lines[i + 1:]:
                if not rest.startswith("  after"):
                    break
                block.append(rest)
            return block
    sys.exit(f"{path}: no held-out evaluation")


def main():
    a_json, b_json, a_txt, b_txt = sys.argv[1:5]
    a = json.load(open(a_json))["eval"]
    b = json.load(open(b_json))["eval"]
    if not a:
        sys.exit(f"{a_json}: no evaluation")
    for point in a:
        for key, value in point.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                sys.exit(f"{a_json}: {key} is {value}")
    if a != b:
        sys.exit(f"different evaluations:\n  {a_json}: {a}\n  {b_json}: {b}")
    ta, tb = held_out(a_txt), held_out(b_txt)
    if ta != tb:
        sys.exit("different printed evaluations:\n" + "\n".join(ta) + "\n--\n" + "\n".join(tb))
    print(f"same evaluation: {len(a)} points, {len(ta) - 1} lines")


main()
