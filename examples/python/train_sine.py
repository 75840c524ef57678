"""Meta-train the MAML sinusoid from Python through the shared library that

    mamlc examples/sine.mdl -o train.so

builds, with ctypes alone (NumPy is used when present, only to report the
learned parameters). The library's mamlc_model_json() names the parameters
and gives every shape, so nothing here is specific to the model but the
task sampler.

usage: python3 train_sine.py PATH/TO/train.so [--iterations N] [--seed S]
                             [--expect-improvement]
"""
import argparse
import ctypes
import json
import math
import random
import sys


def bind(lib, info):
    """Declare the ABI's signatures for the library's real type."""
    real = ctypes.c_float if info["dtype"] == "f32" else ctypes.c_double
    p = ctypes.POINTER(real)
    v = ctypes.c_void_p
    lib.mamlc_model_json.restype = ctypes.c_char_p
    lib.mamlc_param_count.restype = ctypes.c_size_t
    lib.mamlc_state_count.restype = ctypes.c_size_t
    lib.mamlc_init.argtypes = [p, p, ctypes.c_uint64]
    lib.mamlc_meta_step.restype = real
    lib.mamlc_meta_step.argtypes = [p, p, ctypes.c_int, p, v, p, v]
    lib.mamlc_adapt.argtypes = [p, ctypes.c_int, p, v, p]
    lib.mamlc_loss.restype = real
    lib.mamlc_loss.argtypes = [p, p, v]
    return real


def count(shape):
    return math.prod(shape)


def sample_task(rng, k, q):
    amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
    xs = [rng.uniform(-5.0, 5.0) for _ in range(k + q)]
    ys = [amplitude * math.sin(x - phase) for x in xs]
    return xs[:k], ys[:k], xs[k:], ys[k:]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("library")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--expect-improvement", action="store_true",
                        help="exit 1 unless one inner step lowers the held-out loss")
    args = parser.parse_args()

    lib = ctypes.CDLL(args.library)
    lib.mamlc_model_json.restype = ctypes.c_char_p
    info = json.loads(lib.mamlc_model_json().decode())
    real = bind(lib, info)
    assert lib.mamlc_abi_version() == 1, "unknown ABI version"
    k = count(info["support"]["x"]["shape"])
    q = count(info["query"]["x"]["shape"])
    print("parameters:", ", ".join(f"{t['name']}{t['shape']}" for t in info["params"]))

    params = (real * lib.mamlc_param_count())()
    state = (real * lib.mamlc_state_count())()
    lib.mamlc_init(params, state, args.seed)
    rng = random.Random(args.seed)
    batch = args.batch
    sx, sy = (real * (batch * k))(), (real * (batch * k))()
    qx, qy = (real * (batch * q))(), (real * (batch * q))()

    def evaluate(steps, tasks=300):
        eval_rng = random.Random(12345)
        adapted = (real * lib.mamlc_param_count())()
        one_sx, one_sy, one_qx, one_qy = (real * k)(), (real * k)(), (real * q)(), (real * q)()
        total = 0.0
        for _ in range(tasks):
            a, b, c, d = sample_task(eval_rng, k, q)
            one_sx[:], one_sy[:], one_qx[:], one_qy[:] = a, b, c, d
            lib.mamlc_adapt(params, steps, one_sx, one_sy, adapted)
            total += lib.mamlc_loss(adapted, one_qx, one_qy)
        return total / tasks

    loss = float("nan")
    for it in range(args.iterations):
        for t in range(batch):
            a, b, c, d = sample_task(rng, k, q)
            sx[t * k:(t + 1) * k], sy[t * k:(t + 1) * k] = a, b
            qx[t * q:(t + 1) * q], qy[t * q:(t + 1) * q] = c, d
        loss = lib.mamlc_meta_step(params, state, batch, sx, sy, qx, qy)
        if not math.isfinite(loss):
            sys.exit(f"the meta-loss is not finite at iteration {it + 1}")
    mse0, mse1, mse10 = evaluate(0), evaluate(1), evaluate(10)
    print(f"{args.iterations} iterations: last meta-loss {loss:.4f}")
    print(f"held-out query MSE: {mse0:.4f} (0 steps), {mse1:.4f} (1 step), {mse10:.4f} (10 steps)")
    try:
        import numpy as np
        flat = np.ctypeslib.as_array(params)
        for t in info["params"]:
            w = flat[t["offset"]:t["offset"] + count(t["shape"])].reshape(t["shape"])
            print(f"  {t['name']}: mean |w| {np.abs(w).mean():.4f}")
    except ImportError:
        pass
    if args.expect_improvement and not mse1 < mse0:
        sys.exit("one inner step did not lower the held-out loss")


if __name__ == "__main__":
    main()
