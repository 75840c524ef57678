#!/usr/bin/env python3
"""Write a task file for examples/external.mdl: few-shot classification of
2-D points.  Each task is `ways` Gaussian blobs (standard deviation --spread)
around centres drawn uniformly from [-3, 3]^2, with `shots` support and
`queries` query points per class; class c is labelled c, so which blob
bears which label differs from task to task and must be learnt from the
support set.

The file is safetensors, as `mamlc run --tasks` reads it:
    support_x F32 [T, ways*shots, 2]     support_y I32 [T, ways*shots]
    query_x   F32 [T, ways*queries, 2]   query_y   I32 [T, ways*queries]
(F64 with --dtype f64, for a model compiled with --dtype=f64.)  Only NumPy
is needed; safetensors.numpy.save_file writes the same layout.

usage: make_tasks.py OUT.safetensors [--tasks T] [--seed S] [--ways N]
                     [--shots K] [--queries Q] [--spread S] [--dtype f32|f64]
"""
import argparse
import json
import struct

import numpy as np


def make_tasks(rng, tasks, ways, shots, queries, spread, real):
    """The four arrays of `tasks` tasks."""
    per_class = shots + queries
    centres = rng.uniform(-3.0, 3.0, size=(tasks, ways, 1, 2))
    points = centres + spread * rng.standard_normal((tasks, ways, per_class, 2))
    labels = np.broadcast_to(np.arange(ways, dtype=np.int32)[None, :, None], (tasks, ways, per_class))
    # Class by class: the first `shots` points of each class support, the rest query.
    return {
        "support_x": points[:, :, :shots].reshape(tasks, ways * shots, 2).astype(real),
        "support_y": labels[:, :, :shots].reshape(tasks, ways * shots),
        "query_x": points[:, :, shots:].reshape(tasks, ways * queries, 2).astype(real),
        "query_y": labels[:, :, shots:].reshape(tasks, ways * queries),
    }


DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("int32"): "I32"}


def save_safetensors(path, arrays, metadata):
    """Write arrays (name -> ndarray) as safetensors: an 8-byte little-endian
    header length, the JSON header padded with spaces to 8 bytes, then each
    array's little-endian bytes in name order."""
    header = {"__metadata__": metadata}
    blobs, at = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        blob = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ways", type=int, default=3)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--spread", type=float, default=0.7)
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    a = p.parse_args()
    if min(a.tasks, a.ways, a.shots, a.queries) < 1:
        p.error("--tasks, --ways, --shots and --queries must be at least 1")
    rng = np.random.default_rng(a.seed)
    real = np.float32 if a.dtype == "f32" else np.float64
    arrays = make_tasks(rng, a.tasks, a.ways, a.shots, a.queries, a.spread, real)
    meta = {k: str(getattr(a, k)) for k in ("tasks", "seed", "ways", "shots", "queries", "spread")}
    save_safetensors(a.out, arrays, meta)
    size = sum(x.nbytes for x in arrays.values())
    print("wrote %d tasks (%d bytes of data) to %s" % (a.tasks, size, a.out))


if __name__ == "__main__":
    main()
