"""Meta-train an Omniglot model from Python through the shared library that

    mamlc examples/omniglot_mlp.mdl -o train.so     (or omniglot_conv.mdl)

builds, on the real data: tasks are sampled here (omniglot.py, prepared as
`mamlc run` prepares them) and every meta-step runs in the library.  The
task's shape (ways, shots, queries, image size) comes from the library's
mamlc_model_json(), so the same driver serves any Omniglot model.
Evaluation adapts on held-out tasks (alphabets the training split lacks)
and reports accuracy with a 95% confidence interval.

usage: python3 train_omniglot.py train.so --data images_background_small1.zip
           --eval-data images_background_small2.zip [--iterations N]
           [--batch B] [--eval-tasks T] [--seed S] [--expect-above ACC]

Needs NumPy and Pillow (Debian: python3-numpy, python3-pil).
"""
import argparse
import ctypes
import json
import math
import sys

import numpy as np

import omniglot


def bind(lib, info):
    """Declare the ABI's signatures; the result is the NumPy real type."""
    real = np.float32 if info["dtype"] == "f32" else np.float64
    p = np.ctypeslib.ndpointer(real, flags="C_CONTIGUOUS")
    labels = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    lib.mamlc_param_count.restype = ctypes.c_size_t
    lib.mamlc_state_count.restype = ctypes.c_size_t
    lib.mamlc_init.argtypes = [p, p, ctypes.c_uint64]
    lib.mamlc_meta_step.restype = ctypes.c_float if real == np.float32 else ctypes.c_double
    lib.mamlc_meta_step.argtypes = [p, p, ctypes.c_int, p, labels, p, labels]
    lib.mamlc_adapt.argtypes = [p, ctypes.c_int, p, labels, p]
    lib.mamlc_predict.argtypes = [p, p, p]
    return real


def batch(tasks, seed, first, count, real):
    """count tasks from index `first`, stacked as the ABI wants them."""
    drawn = [tasks.task(seed, first + b) for b in range(count)]
    return [np.ascontiguousarray(np.stack([t[i] for t in drawn]), dtype=real if i % 2 == 0 else np.int32)
            for i in range(4)]


def accuracy(lib, params, task, steps, real, shape):
    """Query accuracy after `steps` inner steps on the task's support set."""
    sx, sy, qx, qy = task
    adapted = np.empty_like(params)
    lib.mamlc_adapt(params, steps, np.ascontiguousarray(sx.reshape(shape[0]), dtype=real), sy, adapted)
    logits = np.empty((len(qy), shape[2]), dtype=real)
    lib.mamlc_predict(adapted, np.ascontiguousarray(qx.reshape(shape[1]), dtype=real), logits)
    return float(np.mean(logits.argmax(1) == qy))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("library")
    parser.add_argument("--data", required=True, help="the meta-training background zip")
    parser.add_argument("--eval-data", required=True, help="the held-out background zip")
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch", type=int, help="tasks per meta-step (default: the model's meta_batch)")
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--expect-above", type=float,
                        help="exit 1 unless held-out accuracy after one inner step exceeds this")
    args = parser.parse_args()

    lib = ctypes.CDLL(args.library)
    lib.mamlc_model_json.restype = ctypes.c_char_p
    info = json.loads(lib.mamlc_model_json().decode())
    if info["task"] != "omniglot":
        sys.exit(f"{args.library}: an Omniglot model is needed, not a '{info['task']}' task")
    real = bind(lib, info)
    t = info["task_args"]
    ways, shots, queries = int(t["ways"]), int(t["shots"]), int(t["queries"])
    size, rotations = int(t.get("size", 28)), bool(t.get("rotations", True))
    shape = (info["support"]["x"]["shape"], info["query"]["x"]["shape"], ways)
    count = args.batch or info["meta"]["meta_batch"]

    training = omniglot.load_split(args.data, size)
    tasks = omniglot.Tasks(training, ways, shots, queries, rotations)
    held_out = omniglot.Tasks(omniglot.held_out(omniglot.load_split(args.eval_data, size), training),
                              ways, shots, queries, rotations)
    print(f"{ways}-way {shots}-shot: {len(tasks.classes)} training classes, "
          f"{len(held_out.classes)} held-out classes, {lib.mamlc_param_count()} parameters")

    params = np.zeros(lib.mamlc_param_count(), dtype=real)
    state = np.zeros(lib.mamlc_state_count(), dtype=real)
    lib.mamlc_init(params, state, args.seed)
    for it in range(args.iterations):
        sx, sy, qx, qy = batch(tasks, args.seed, it * count, count, real)
        loss = lib.mamlc_meta_step(params, state, count, sx.reshape(count, *shape[0]), sy,
                                   qx.reshape(count, *shape[1]), qy)
        if not math.isfinite(loss):
            sys.exit(f"the meta-loss is not finite at iteration {it + 1}")
    print(f"{args.iterations} iterations of {count} tasks: last meta-loss {loss:.4f}")

    results = {}
    for steps in sorted({0, 1, info["meta"]["inner_steps"]}):
        acc = [accuracy(lib, params, held_out.task(args.seed + 1, i), steps, real, shape)
               for i in range(args.eval_tasks)]
        ci = 1.96 * np.std(acc, ddof=1) / math.sqrt(len(acc)) if len(acc) > 1 else float("nan")
        results[steps] = float(np.mean(acc))
        print(f"held-out accuracy after {steps} inner step(s): {results[steps]:.4f} +- {ci:.4f} "
              f"({len(acc)} tasks)")
    if args.expect_above is not None and not results[1] > args.expect_above:
        sys.exit(f"held-out accuracy {results[1]:.4f} is not above {args.expect_above}")


if __name__ == "__main__":
    main()
