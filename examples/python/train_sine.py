"""Meta-train the MAML sinusoid from Python with the mamlc package:

    pip install --no-index --no-build-isolation ./python
    python3 examples/python/train_sine.py [MODEL.mdl | LIB.so] [--iterations N]

MODEL.mdl (default: examples/sine.mdl) is compiled by mamlc ($MAMLC, else
mamlc on PATH) and cached; LIB.so is a library already built with
`mamlc MODEL -o LIB.so`.  The tasks are the model's own (sample_tasks:
those `mamlc run --seed` draws), the held-out figures those of `mamlc eval`
on as many tasks.  Without the package installed, the one in this
repository's python/ folder is used.
"""
import argparse
import os
import sys

import numpy as np

try:
    import mamlc
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import mamlc

HERE = os.path.dirname(os.path.abspath(__file__))


def held_out_loss(m, params, tasks, steps):
    """The mean query loss after `steps` inner steps on each task's support set."""
    return float(np.mean([m.loss(m.adapt(params, tasks.sx[t], tasks.sy[t], steps=steps), tasks.qx[t], tasks.qy[t])
                          for t in range(len(tasks.sx))]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=os.path.join(HERE, "..", "sine.mdl"),
                        help="a .mdl file to compile, or a library built by mamlc -o")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--eval-tasks", type=int, default=300)
    parser.add_argument("--expect-improvement", action="store_true",
                        help="exit 1 unless one inner step lowers the held-out loss")
    args = parser.parse_args()

    m = mamlc.open_library(args.model) if args.model.endswith(".so") else mamlc.compile(args.model)
    print("parameters:", ", ".join(f"{t['name']}{t['shape']}" for t in m.info["params"]))
    params, state = m.init(seed=args.seed)
    loss = float("nan")
    for it in range(args.iterations):
        loss = m.meta_step(params, state, *m.sample_tasks(args.batch, seed=args.seed, first=it * args.batch))
        if not np.isfinite(loss):
            sys.exit(f"the meta-loss is not finite at iteration {it + 1}")

    tasks = m.sample_tasks(args.eval_tasks, seed=args.seed, held_out=True)
    mse0, mse1, mse10 = (held_out_loss(m, params, tasks, k) for k in (0, 1, 10))
    print(f"{args.iterations} iterations: last meta-loss {loss:.4f}")
    print(f"held-out query MSE: {mse0:.4f} (0 steps), {mse1:.4f} (1 step), {mse10:.4f} (10 steps)")
    for name, w in m.tensors(params).items():
        print(f"  {name}: mean |w| {np.abs(w).mean():.4f}")

    # The fit on one held-out task, at any number of points (chunks of the
    # compiled query size).
    if m.info["predict"] and m.any_points:
        fast = m.adapt(params, tasks.sx[0], tasks.sy[0], steps=10)
        x = np.linspace(-5.0, 5.0, 101, dtype=m.dtype)[:, None]
        print(f"  prediction after 10 steps at x = -5, 0, 5: {m.predict(fast, x)[[0, 50, 100], 0].round(3)}")
    if args.expect_improvement and not mse1 < mse0:
        sys.exit("one inner step did not lower the held-out loss")


if __name__ == "__main__":
    main()
