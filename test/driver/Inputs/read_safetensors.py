#!/usr/bin/env python3
"""Read a safetensors file with only the standard library, independently of
mamlc's own reader, and print what it holds:

    metadata KEY = VALUE          (sorted by key)
    NAME DTYPE [SHAPE] v0 v1 ...  (sorted by name; --values prints them all,
                                   otherwise count, sum, min and max)

It checks the file as the reference implementation does (header length,
UTF-8 JSON object, known dtypes, data_offsets tiling the data exactly) and
exits 1 with a message on stderr when the file breaks a rule.

usage: read_safetensors.py FILE [--values]
"""
import array
import json
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
TYPECODES = {"F32": "f", "F64": "d"}
MAX_HEADER = 100_000_000


def fail(msg):
    sys.stderr.write("read_safetensors: %s\n" % msg)
    sys.exit(1)


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        fail("duplicate key in the header")
    return dict(pairs)


def load(path):
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        fail("%s: %d bytes, fewer than 8" % (path, len(buf)))
    (n,) = struct.unpack("<Q", buf[:8])
    if n > MAX_HEADER or n > len(buf) - 8:
        fail("%s: header length %d does not fit" % (path, n))
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        fail("%s: bad header: %s" % (path, e))
    if not isinstance(header, dict):
        fail("%s: header is not an object" % path)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        fail("%s: __metadata__ is not a string-to-string object" % path)
    data = buf[8 + n:]
    tensors = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            fail("%s: tensor %s is not {dtype, shape, data_offsets}" % (path, name))
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SIZES:
            fail("%s: tensor %s has unknown dtype %s" % (path, name, dtype))
        count = 1
        for d in shape:
            if not isinstance(d, int) or d < 0:
                fail("%s: tensor %s has a bad shape" % (path, name))
            count *= d
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            fail("%s: tensor %s has bad data_offsets" % (path, name))
        if end - begin != count * SIZES[dtype]:
            fail("%s: tensor %s: data_offsets disagree with shape" % (path, name))
        spans.append((begin, end, name))
        values = None
        if dtype in TYPECODES:
            values = array.array(TYPECODES[dtype])
            values.frombytes(data[begin:end])
            if sys.byteorder != "little":
                values.byteswap()
        tensors[name] = (dtype, shape, values)
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            fail("%s: data of %s does not start where the previous tensor ends" % (path, name))
        at = end
    if at != len(data):
        fail("%s: tensors hold %d bytes of data, the file %d" % (path, at, len(data)))
    return metadata, tensors


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--values"):
        fail("usage: read_safetensors.py FILE [--values]")
    metadata, tensors = load(argv[1])
    for key in sorted(metadata):
        print("metadata %s = %s" % (key, metadata[key]))
    for name in sorted(tensors):
        dtype, shape, values = tensors[name]
        line = "%s %s %s" % (name, dtype, json.dumps(shape))
        if values is None:
            pass
        elif len(argv) == 3:
            line += "".join(" " + repr(v) for v in values)
        elif len(values):
            line += " count %d sum %r min %r max %r" % (
                len(values), sum(values), min(values), max(values))
        else:
            line += " count 0"
        print(line)


if __name__ == "__main__":
    main(sys.argv)
