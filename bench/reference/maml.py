#!/usr/bin/python3
"""Second-order MAML in PyTorch eager: the reference mamlc is measured against.

The models mirror examples/sine.mdl, examples/omniglot_mlp.mdl and
examples/omniglot_conv.mdl layer for layer (same shapes, initialisers, batch
norm with batch statistics and eps 1e-5, cross-entropy, Adam 0.001 outside),
and the meta-step is the textbook one: per task, adapt with
torch.autograd.grad(..., create_graph=True), then back-propagate the mean
query loss through the adaptation.  Omniglot is read from the release's zip
files with the same preprocessing as mamlc (area-averaged resize, strokes 1,
four rotations per character as classes, held-out alphabets only).

  maml.py time --workload sine|omni-mlp|omni-conv|mini-conv [--steps N] [--warmup W]
      median seconds of one meta-step (one JSON line)
  maml.py train --model mlp|conv --data small1.zip --eval-data small2.zip ...
      meta-train and evaluate on held-out tasks (and the 20-way runs)
  maml.py check --model mlp|conv --library train.so --data small1.zip
      the reference's meta-gradient against mamlc's (mamlc_meta_grad of a
      library built by `mamlc examples/omniglot_MODEL.mdl -o train.so`) at
      the same parameters on the same tasks

Runs on Debian's python3-torch; one thread unless --threads.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Models: (shapes and initialisers, forward(params, x), loss, metric)

def he(shape, gen):
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)


def glorot(shape, gen):
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def batch_norm(x, gamma, beta):
    """Batch statistics per call (no running averages), as in MAML."""
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)


class Sine:
    """1-40-40-1 ReLU MLP, MSE (examples/sine.mdl)."""

    def init(self, gen):
        return [he((40, 1), gen), torch.zeros(40), he((40, 40), gen), torch.zeros(40),
                he((1, 40), gen), torch.zeros(1)]

    def forward(self, p, x):
        h = F.relu(F.linear(x, p[0], p[1]))
        h = F.relu(F.linear(h, p[2], p[3]))
        return F.linear(h, p[4], p[5])

    def loss(self, out, y):
        return F.mse_loss(out, y)


class Classifier:
    def loss(self, out, y):
        return F.cross_entropy(out, y)

    def metric(self, out, y):
        return (out.argmax(1) == y).float().mean()


class OmniglotMLP(Classifier):
    """784-256-128-64-64-N with batch norm and ReLU (examples/omniglot_mlp.mdl)."""
    flat = True

    def __init__(self, ways):
        self.sizes = [784, 256, 128, 64, 64]
        self.ways = ways

    def init(self, gen):
        p = []
        for fan_in, out in zip(self.sizes, self.sizes[1:]):
            p += [glorot((out, fan_in), gen), torch.zeros(out), torch.ones(out), torch.zeros(out)]
        return p + [glorot((self.ways, 64), gen), torch.zeros(self.ways)]

    def forward(self, p, x):
        for i in range(4):
            w, b, g, s = p[4 * i:4 * i + 4]
            x = F.relu(batch_norm(F.linear(x, w, b), g, s))
        return F.linear(x, p[16], p[17])


class OmniglotConv(Classifier):
    """Four 3x3 conv blocks, 64 filters, stride 2, pad 1, batch norm, ReLU, then a
    linear head on the flattened 64x2x2 features (examples/omniglot_conv.mdl)."""
    flat = False

    def __init__(self, ways):
        self.ways = ways

    def init(self, gen):
        p = []
        for cin in (1, 64, 64, 64):
            p += [he((64, cin, 3, 3), gen), torch.zeros(64), torch.ones(64), torch.zeros(64)]
        return p + [glorot((self.ways, 256), gen), torch.zeros(self.ways)]

    def forward(self, p, x):
        for i in range(4):
            c, b, g, s = p[4 * i:4 * i + 4]
            x = F.relu(batch_norm(F.conv2d(x, c, b, stride=2, padding=1), g, s))
        return F.linear(x.flatten(1), p[16], p[17])


class MiniConv(Classifier):
    """Conv-4 of Finn et al. 2017 for mini-ImageNet: four blocks of 3x3
    convolution with 32 filters (pad 1), batch norm, ReLU and 2x2 max pooling
    (84 -> 42 -> 21 -> 10 -> 5), then a linear head on the flattened 32x5x5
    features (examples/images.mdl)."""
    flat = False

    def __init__(self, ways):
        self.ways = ways

    def init(self, gen):
        p = []
        for cin in (3, 32, 32, 32):
            p += [he((32, cin, 3, 3), gen), torch.zeros(32), torch.ones(32), torch.zeros(32)]
        return p + [glorot((self.ways, 32 * 25), gen), torch.zeros(self.ways)]

    def forward(self, p, x):
        for i in range(4):
            c, b, g, s = p[4 * i:4 * i + 4]
            x = F.max_pool2d(F.relu(batch_norm(F.conv2d(x, c, b, padding=1), g, s)), 2)
        return F.linear(x.flatten(1), p[16], p[17])


# ---------------------------------------------------------------------------
# MAML

def adapt(model, params, x, y, lr, steps, create_graph):
    """steps inner SGD steps on (x, y) from params."""
    for _ in range(steps):
        loss = model.loss(model.forward(params, x), y)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


def meta_step(model, params, opt, tasks, lr, steps):
    """One second-order MAML step over tasks [(sx, sy, qx, qy)]: the mean
    query loss after adaptation, back-propagated through the adaptation, then
    Adam.  Returns the mean query loss."""
    opt.zero_grad()
    total = 0.0
    for sx, sy, qx, qy in tasks:
        fast = adapt(model, params, sx, sy, lr, steps, create_graph=True)
        loss = model.loss(model.forward(fast, qx), qy) / len(tasks)
        loss.backward()
        total += loss.item()
    opt.step()
    return total


# ---------------------------------------------------------------------------
# Omniglot: the data module the Python example drivers use

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python"))
import omniglot  # noqa: E402


def as_tensors(task, flat):
    """An (sx, sy, qx, qy) task of NumPy arrays as model inputs."""
    sx, sy, qx, qy = task
    shape = (lambda a: torch.from_numpy(a.reshape(len(a), -1))) if flat else \
        (lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1))
    return shape(sx), torch.from_numpy(sy).long(), shape(qx), torch.from_numpy(qy).long()


def evaluate(model, params, tasks, lr, steps_list):
    """Mean query loss and accuracy, with 95% intervals, after each step count."""
    out = []
    for steps in steps_list:
        losses, accs = [], []
        for sx, sy, qx, qy in tasks:
            fast = [p.detach().requires_grad_() for p in params]
            fast = adapt(model, fast, sx, sy, lr, steps, create_graph=False)
            with torch.no_grad():
                pred = model.forward(fast, qx)
                losses.append(model.loss(pred, qy).item())
                accs.append(model.metric(pred, qy).item())
        point = {"steps": steps}
        for key, v in (("loss", losses), ("metric", accs)):
            point[key] = statistics.fmean(v)
            point[key + "_ci95"] = 1.96 * statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None
        out.append(point)
    return out


def train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = (OmniglotMLP if a.model == "mlp" else OmniglotConv)(a.ways)
    train_chars = omniglot.load_split(a.data)
    source = omniglot.Tasks(train_chars, a.ways, a.shots, a.queries)
    eval_source = omniglot.Tasks(omniglot.held_out(omniglot.load_split(a.eval_data), train_chars),
                                 a.ways, a.shots, a.queries)
    eval_tasks = [as_tensors(eval_source.task(a.seed + 1, t), model.flat) for t in range(a.eval_tasks)]
    steps_list = [int(s) for s in a.eval_steps.split(",")]
    gen = torch.Generator().manual_seed(a.seed)
    params = [p.requires_grad_() for p in model.init(gen)]
    opt = torch.optim.Adam(params, lr=0.001)
    print(f"PyTorch {torch.__version__}, {a.threads} thread(s): {a.model} {a.ways}-way {a.shots}-shot, "
          f"{len(source.classes)} training classes, {len(eval_source.classes)} held-out classes", flush=True)
    seconds, done, log = 0.0, 0, []
    while done < a.iterations:
        start = time.perf_counter()
        tasks = [as_tensors(source.task(a.seed, done * a.meta_batch + b), model.flat)
                 for b in range(a.meta_batch)]
        loss = meta_step(model, params, opt, tasks, a.inner_lr, a.inner_steps)
        seconds += time.perf_counter() - start
        done += 1
        if done % a.eval_every == 0 or done == a.iterations:
            points = evaluate(model, params, eval_tasks, a.inner_lr, steps_list)
            log.append({"iterations": done, "eval": points})
            print(f"eval @ {done}: meta-loss {loss:.4g} " + " | ".join(
                f"steps {p['steps']} acc {p['metric']:.4f} +- {p['metric_ci95']:.4f}" for p in points), flush=True)
    report = {"iterations": done, "seconds": seconds, "steps_per_second": done / seconds,
              "eval": log[-1]["eval"], "curve": log}
    if a.runs:
        runs = [as_tensors(r, model.flat) for r in omniglot.load_runs(a.runs)]
        errors = [1 - evaluate(model, params, [r], a.inner_lr, [a.inner_steps])[0]["metric"] for r in runs]
        report["runs_error"] = statistics.fmean(errors)
        print(f"20-way one-shot runs: error {100 * report['runs_error']:.1f}%")
    with open(a.report, "w") as f:
        json.dump(report, f)
        f.write("\n")


# ---------------------------------------------------------------------------
# Timing one meta-step

def workload(name):
    """(model, tasks, inner lr, inner steps) of bench/run's workload, on random
    data of the right shapes (the time of a step does not depend on the
    values)."""
    gen = torch.Generator().manual_seed(0)
    if name == "sine":
        tasks = []
        for _ in range(25):
            amp, phase = 0.1 + 4.9 * torch.rand(1, generator=gen), math.pi * torch.rand(1, generator=gen)
            x = torch.rand(20, 1, generator=gen) * 10 - 5
            y = amp * torch.sin(x + phase)
            tasks.append((x[:10], y[:10], x[10:], y[10:]))
        return Sine(), tasks, 0.01, 1
    if name == "mini-conv":     # 5-way 1-shot, 15 queries, meta-batch 4, 5 inner steps
        tasks = [(torch.rand(5, 3, 84, 84, generator=gen), torch.arange(5),
                  torch.rand(75, 3, 84, 84, generator=gen), torch.arange(5).repeat(15)) for _ in range(4)]
        return MiniConv(5), tasks, 0.01, 5
    model = OmniglotMLP(5) if name == "omni-mlp" else OmniglotConv(5)
    shape = (784,) if model.flat else (1, 28, 28)
    tasks = [(torch.rand(5, *shape, generator=gen), torch.arange(5),
              torch.rand(75, *shape, generator=gen), torch.arange(5).repeat(15)) for _ in range(32)]
    return model, tasks, 0.4, 1


def time_steps(a):
    torch.set_num_threads(a.threads)
    model, tasks, lr, steps = workload(a.workload)
    params = [p.requires_grad_() for p in model.init(torch.Generator().manual_seed(0))]
    opt = torch.optim.Adam(params, lr=0.001)
    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        meta_step(model, params, opt, tasks, lr, steps)
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps({"workload": a.workload, "median_seconds": statistics.median(times),
                      "steps": a.steps, "threads": a.threads, "torch": torch.__version__}))


def check(a):
    """Both systems' meta-gradient at mamlc_init's parameters on the same tasks,
    in the library's real type (build it with --dtype=f64 to see the
    methods agree beyond f32 rounding)."""
    import ctypes
    torch.set_num_threads(a.threads)
    lib = ctypes.CDLL(a.library)
    lib.mamlc_model_json.restype = ctypes.c_char_p
    info = json.loads(lib.mamlc_model_json().decode())
    lib.mamlc_param_count.restype = lib.mamlc_state_count.restype = ctypes.c_size_t
    real = np.float64 if info["dtype"] == "f64" else np.float32
    reals = np.ctypeslib.ndpointer(real, flags="C_CONTIGUOUS")
    i32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
    lib.mamlc_init.argtypes = [reals, reals, ctypes.c_uint64]
    lib.mamlc_meta_grad.restype = ctypes.c_double if real == np.float64 else ctypes.c_float
    lib.mamlc_meta_grad.argtypes = [reals, ctypes.c_int, reals, i32, reals, i32, reals]
    t = info["task_args"]
    model = (OmniglotMLP if a.model == "mlp" else OmniglotConv)(int(t["ways"]))
    flat = np.zeros(lib.mamlc_param_count(), dtype=real)
    lib.mamlc_init(flat, np.zeros(lib.mamlc_state_count(), dtype=real), a.seed)
    source = omniglot.Tasks(omniglot.load_split(a.data), int(t["ways"]), int(t["shots"]), int(t["queries"]))
    tasks = [source.task(a.seed, i) for i in range(a.tasks)]
    stack = lambda i, dtype: np.ascontiguousarray(np.stack([task[i] for task in tasks]), dtype=dtype)
    grad = np.zeros_like(flat)
    loss = lib.mamlc_meta_grad(flat, len(tasks), stack(0, real), stack(1, np.int32),
                               stack(2, real), stack(3, np.int32), grad)

    def reference(dtype):
        """The reference's loss and meta-gradient at the library's point, in dtype."""
        params = [torch.from_numpy(flat[p["offset"]:p["offset"] + math.prod(p["shape"])].reshape(p["shape"]))
                  .to(dtype).requires_grad_() for p in info["params"]]
        total = 0.0
        for task in tasks:
            sx, sy, qx, qy = as_tensors(task, model.flat)
            fast = adapt(model, params, sx.to(dtype), sy, info["meta"]["inner_lr"], info["meta"]["inner_steps"], True)
            q = model.loss(model.forward(fast, qx.to(dtype)), qy) / len(tasks)
            q.backward()
            total += q.item()
        return total, np.concatenate([p.grad.numpy().ravel() for p in params])

    ref_loss, ref = reference(torch.float64 if real == np.float64 else torch.float32)
    exact = reference(torch.float64)[1]         # the same point, in f64: the yardstick
    error = lambda g: float(np.linalg.norm(g - exact) / np.linalg.norm(exact))
    print(json.dumps({"model": a.model, "dtype": info["dtype"], "tasks": len(tasks), "mamlc_loss": float(loss),
                      "torch_loss": ref_loss, "relative_difference": error(grad) if real == np.float64 else
                      float(np.linalg.norm(grad - ref) / np.linalg.norm(ref)),
                      "mamlc_error_vs_f64": error(grad), "torch_error_vs_f64": error(ref)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="median seconds of one meta-step")
    t.add_argument("--workload", choices=["sine", "omni-mlp", "omni-conv", "mini-conv"], required=True)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("train", help="meta-train on Omniglot and evaluate on held-out tasks")
    r.add_argument("--model", choices=["mlp", "conv"], required=True)
    r.add_argument("--data", required=True, help="the meta-training background zip")
    r.add_argument("--eval-data", required=True, help="the held-out background zip")
    r.add_argument("--runs", help="all_runs.zip: also report the 20-way one-shot error")
    r.add_argument("--ways", type=int, default=5)
    r.add_argument("--shots", type=int, default=1)
    r.add_argument("--queries", type=int, default=15)
    r.add_argument("--meta-batch", type=int, default=32)
    r.add_argument("--inner-lr", type=float, default=0.4)
    r.add_argument("--inner-steps", type=int, default=1)
    r.add_argument("--iterations", type=int, default=2000)
    r.add_argument("--eval-every", type=int, default=500)
    r.add_argument("--eval-tasks", type=int, default=600)
    r.add_argument("--eval-steps", default="0,1,3")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--report", required=True)
    c = sub.add_parser("check", help="the meta-gradient against a mamlc library's at the same point")
    c.add_argument("--model", choices=["mlp", "conv"], required=True)
    c.add_argument("--library", required=True, help="mamlc examples/omniglot_MODEL.mdl -o train.so")
    c.add_argument("--data", required=True, help="a background zip")
    c.add_argument("--tasks", type=int, default=4)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    {"time": time_steps, "train": train, "check": check}[a.command](a)


if __name__ == "__main__":
    main()
