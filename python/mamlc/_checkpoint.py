"""Checkpoints in the format of `mamlc run --save` (runtime/checkpoint.h):
safetensors with each tensor under its name, the optimiser state as
"__state__" and the metadata "format", "model" (a fingerprint of the
layout) and "iteration", so `mamlc eval --load` and `mamlc run --resume`
read what Model.save writes, and Model.load reads what they write."""
import json
import os
import struct
import tempfile

import numpy as np

FORMAT = "mamlc-checkpoint-1"
STATE = "__state__"
_DTYPE = {"f32": ("F32", np.dtype("<f4")), "f64": ("F64", np.dtype("<f8"))}


def fingerprint(dtype, params):
    """runtime/checkpoint.c's rt_checkpoint_fingerprint of the layout: FNV-1a
    64 over the dtype and each tensor's name and shape."""
    h = 0xcbf29ce484222325
    text = _DTYPE[dtype][0] + "".join(f"\n{p['name']}[{','.join(str(d) for d in p['shape'])}]" for p in params)
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"fnv1a64:{h:016x}"


def save(path, info, params, state):
    """Write params (and state, when not None: the optimiser's state, then
    the step count as its last real) to path atomically."""
    code, le = _DTYPE[info["dtype"]]
    arrays = {}
    for p in info["params"]:
        n = int(np.prod(p["shape"], dtype=np.int64))
        arrays[p["name"]] = (p["shape"], params[p["offset"]:p["offset"] + n])
    meta = {"format": FORMAT, "model": fingerprint(info["dtype"], info["params"])}
    if state is not None:
        arrays[STATE] = ([len(state) - 1], state[:-1])
        meta["iteration"] = str(int(state[-1]))
    header = {"__metadata__": meta}
    at = 0
    for name in sorted(arrays):
        shape, data = arrays[name]
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [at, at + data.size * le.itemsize]}
        at += data.size * le.itemsize
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ck.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for name in sorted(arrays):
                f.write(np.ascontiguousarray(arrays[name][1], dtype=le).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path, info, param_count, state_count):
    """(params, state) from the checkpoint at path, state None when the
    file holds none.  Every fault is a ValueError naming the file."""
    code, le = _DTYPE[info["dtype"]]
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header of {n} bytes runs past the end of the file")
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: the header is not JSON ({e})") from None
    data = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    if meta.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{path}: format {meta['format']!r} is not {FORMAT}")
    mine = fingerprint(info["dtype"], info["params"])
    if "model" in meta and meta["model"] != mine:
        raise ValueError(f"{path}: saved from a different model (fingerprint {meta['model']}; this model's is {mine})")

    def tensor(name, shape):
        t = header.get(name)
        if t is None:
            raise ValueError(f"{path}: no tensor {name}")
        if t.get("dtype") != code:
            raise ValueError(f"{path}: {name} is {t.get('dtype')}, the model's reals are {code}")
        if list(t.get("shape", [])) != list(shape):
            raise ValueError(f"{path}: {name} has shape {t.get('shape')}, the model's is {list(shape)}")
        lo, hi = t["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= lo <= hi <= len(data) or hi - lo != count * le.itemsize:
            raise ValueError(f"{path}: {name}'s data_offsets {[lo, hi]} do not fit its shape and the file")
        return np.frombuffer(data[lo:hi], dtype=le)

    names = {p["name"] for p in info["params"]}
    extra = sorted(set(header) - names - {STATE})
    if extra:
        raise ValueError(f"{path}: tensor {extra[0]} is not a tensor of the model")
    params = np.empty(param_count, dtype=le.newbyteorder("="))
    for p in info["params"]:
        n = int(np.prod(p["shape"], dtype=np.int64))
        params[p["offset"]:p["offset"] + n] = tensor(p["name"], p["shape"])
    if STATE not in header:
        return params, None
    state = np.empty(state_count, dtype=params.dtype)
    state[:-1] = tensor(STATE, [state_count - 1])
    state[-1] = int(meta.get("iteration", "0"))
    return params, state
