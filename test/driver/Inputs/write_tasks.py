#!/usr/bin/env python3
"""Write a safetensors file of arrays given on the command line, with only
the standard library, for tests of task files (good ones and bad ones):

    write_tasks.py OUT [--truncate N] [--header TEXT] NAME:DTYPE:SHAPE[:MOD] ...

SHAPE is comma-separated extents ("" for a scalar).  F32 and F64 arrays get
pseudo-random values in [-3, 3) (the same every time); I32 ones the values
i % MOD (MOD default 3) for element i, or MOD itself at element 0 when MOD
is negative ("bad label" arrays: -5 puts 5 first, then i % 5).
--truncate N cuts the last N bytes; --header TEXT writes TEXT as the JSON
header instead (the data is then the arrays' as usual).
"""
import json
import random
import struct
import sys

FORMATS = {"F32": "<f", "F64": "<d", "I32": "<i", "I64": "<q"}


def values(dtype, count, mod, rng):
    if dtype in ("F32", "F64"):
        return [rng.uniform(-3.0, 3.0) for _ in range(count)]
    m = abs(mod)
    out = [i % m for i in range(count)]
    if mod < 0 and count:
        out[0] = m
    return out


def main(argv):
    out, truncate, header_text, specs = argv[1], 0, None, []
    args = iter(argv[2:])
    for a in args:
        if a == "--truncate":
            truncate = int(next(args))
        elif a == "--header":
            header_text = next(args)
        else:
            specs.append(a)
    rng = random.Random(1)
    header, data = {}, b""
    for spec in specs:
        parts = spec.split(":")
        name, dtype, shape = parts[0], parts[1], [int(d) for d in parts[2].split(",") if d]
        mod = int(parts[3]) if len(parts) > 3 else 3
        count = 1
        for d in shape:
            count *= d
        blob = b"".join(struct.pack(FORMATS[dtype], v) for v in values(dtype, count, mod, rng))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    text = (header_text if header_text is not None else json.dumps(header, separators=(",", ":"))).encode()
    text += b" " * (-len(text) % 8)
    buf = struct.pack("<Q", len(text)) + text + data
    with open(out, "wb") as f:
        f.write(buf[:len(buf) - truncate])


if __name__ == "__main__":
    main(sys.argv)
