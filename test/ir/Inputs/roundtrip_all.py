#!/usr/bin/env python3
"""Print, parse and print again every .ir file under a folder, with
--locations (names, phase markers and locations all kept); report each
file whose second printing differs from its first.

Usage: roundtrip_all.py MAMLC-OPT FOLDER"""
import glob
import os
import subprocess
import sys
import tempfile

opt, folder = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(folder, "**", "*.ir"), recursive=True))
bad = 0
with tempfile.TemporaryDirectory() as tmp:
    for path in files:
        first = subprocess.run([opt, "--locations", path], capture_output=True, text=True)
        if first.returncode != 0:
            print(f"{path}: does not read: {first.stderr.strip()}")
            bad += 1
            continue
        again_in = os.path.join(tmp, "first.ir")
        with open(again_in, "w") as f:
            f.write(first.stdout)
        second = subprocess.run([opt, "--locations", again_in], capture_output=True, text=True)
        if second.returncode != 0 or second.stdout != first.stdout:
            print(f"{path}: printing it again gives other text")
            bad += 1
print(f"roundtrip: {len(files)} files, {bad} differing")
sys.exit(1 if bad else 0)
