#!/usr/bin/python3
"""Second-order MAML in JAX (jit + vmap): the XLA reference of the GPU check.

It mirrors bench/reference/maml.py model for model and step for step: the
same networks (examples/sine.mdl, examples/omniglot_mlp.mdl,
examples/omniglot_conv.mdl: shapes, initialisers, batch norm with batch
statistics and eps 1e-5, cross-entropy), the same inner loop (plain SGD
steps, differentiated through: jax.grad inside jax.grad is second order),
the mean query loss over the meta-batch, then Adam 0.001 as torch.optim.Adam
computes it.  Where maml.py loops over the tasks, this maps one task's
loss over the meta-batch with jax.vmap, and the whole step (meta-gradient
and Adam) is one jax.jit function: what XLA makes of MAML at its best.
Matrix products and convolutions run at `highest` precision (true f32, no
TF32), as the GPU check asks.

  maml_jax.py time --workload sine|omni-mlp|omni-conv [--steps N] [--warmup W]
      median seconds of one meta-step on JAX's default device (one JSON line)

Needs jax and numpy; test/gpu/check imports it.
"""
import argparse
import json
import math
import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_default_matmul_precision", "highest")
HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------
# Models: (shapes and initialisers, forward(params, x), loss)

def he(key, shape):
    fan_in = math.prod(shape[1:])
    return jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / fan_in)


def glorot(key, shape):
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def linear(x, w, b):
    """F.linear: x @ w^T + b."""
    return jnp.matmul(x, w.T, precision=HIGHEST) + b


def batch_norm(x, gamma, beta):
    """Batch statistics per call (no running averages), as in MAML: over the
    batch and, for images, every position; biased variance, eps 1e-5."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axes, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * gamma.reshape(shape) + beta.reshape(shape)


def conv2d(x, w, b, stride, padding):
    """F.conv2d, NCHW and OIHW."""
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((padding, padding), (padding, padding)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HIGHEST)
    return y + b.reshape(1, -1, 1, 1)


def mse_loss(out, y):
    return jnp.mean((out - y) ** 2)


def cross_entropy(out, y):
    """F.cross_entropy with integer labels: the mean of -log softmax at the label."""
    logp = jax.nn.log_softmax(out, axis=1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


class Sine:
    """1-40-40-1 ReLU MLP, MSE (examples/sine.mdl)."""

    def init(self, key):
        k = jax.random.split(key, 3)
        return [he(k[0], (40, 1)), jnp.zeros(40), he(k[1], (40, 40)), jnp.zeros(40),
                he(k[2], (1, 40)), jnp.zeros(1)]

    def forward(self, p, x):
        h = jax.nn.relu(linear(x, p[0], p[1]))
        h = jax.nn.relu(linear(h, p[2], p[3]))
        return linear(h, p[4], p[5])

    def loss(self, out, y):
        return mse_loss(out, y)


class OmniglotMLP:
    """784-256-128-64-64-N with batch norm and ReLU (examples/omniglot_mlp.mdl)."""
    flat = True

    def __init__(self, ways):
        self.sizes = [784, 256, 128, 64, 64]
        self.ways = ways

    def init(self, key):
        k = jax.random.split(key, 5)
        p = []
        for i, (fan_in, out) in enumerate(zip(self.sizes, self.sizes[1:])):
            p += [glorot(k[i], (out, fan_in)), jnp.zeros(out), jnp.ones(out), jnp.zeros(out)]
        return p + [glorot(k[4], (self.ways, 64)), jnp.zeros(self.ways)]

    def forward(self, p, x):
        for i in range(4):
            w, b, g, s = p[4 * i:4 * i + 4]
            x = jax.nn.relu(batch_norm(linear(x, w, b), g, s))
        return linear(x, p[16], p[17])

    def loss(self, out, y):
        return cross_entropy(out, y)


class OmniglotConv:
    """Four 3x3 conv blocks, 64 filters, stride 2, pad 1, batch norm, ReLU, then a
    linear head on the flattened 64x2x2 features (examples/omniglot_conv.mdl)."""
    flat = False

    def __init__(self, ways):
        self.ways = ways

    def init(self, key):
        k = jax.random.split(key, 5)
        p = []
        for i, cin in enumerate((1, 64, 64, 64)):
            p += [he(k[i], (64, cin, 3, 3)), jnp.zeros(64), jnp.ones(64), jnp.zeros(64)]
        return p + [glorot(k[4], (self.ways, 256)), jnp.zeros(self.ways)]

    def forward(self, p, x):
        for i in range(4):
            c, b, g, s = p[4 * i:4 * i + 4]
            x = jax.nn.relu(batch_norm(conv2d(x, c, b, 2, 1), g, s))
        return linear(x.reshape(x.shape[0], -1), p[16], p[17])

    def loss(self, out, y):
        return cross_entropy(out, y)


# ---------------------------------------------------------------------------
# MAML

def adapt(model, params, x, y, lr, steps):
    """steps inner SGD steps on (x, y) from params; differentiable (second order)."""
    for _ in range(steps):
        grads = jax.grad(lambda p: model.loss(model.forward(p, x), y))(params)
        params = [p - lr * g for p, g in zip(params, grads)]
    return params


def make_step(model, lr, steps, adam_lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
    """One second-order MAML step over a meta-batch of stacked tasks (sx, sy,
    qx, qy), each with a leading task axis: the mean query loss after
    adaptation, its gradient with respect to params through the adaptation,
    then Adam (torch.optim.Adam's arithmetic, t 1-based).  Returns
    step(params, m, v, t, tasks) -> (params, m, v, loss), jitted."""

    def task_loss(params, sx, sy, qx, qy):
        fast = adapt(model, params, sx, sy, lr, steps)
        return model.loss(model.forward(fast, qx), qy)

    def batch_loss(params, tasks):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0, 0, 0, 0))(params, *tasks))

    def step(params, m, v, t, tasks):
        loss, grads = jax.value_and_grad(batch_loss)(params, tasks)
        m = [beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads)]
        v = [beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads)]
        step_size = adam_lr / (1 - beta1 ** t)
        bc2 = jnp.sqrt(1 - beta2 ** t)
        params = [p - step_size * mi / (jnp.sqrt(vi) / bc2 + eps) for p, mi, vi in zip(params, m, v)]
        return params, m, v, loss

    return jax.jit(step)


# ---------------------------------------------------------------------------
# Timing one meta-step

def workload(name):
    """(model, tasks, inner lr, inner steps) of bench/run's workload, as
    maml.py's workload() makes them: random data of the right shapes (the
    time of a step does not depend on the values), stacked along a task axis."""
    rng = np.random.default_rng(0)
    if name == "sine":
        amp = rng.uniform(0.1, 5.0, (25, 1, 1)).astype(np.float32)
        phase = rng.uniform(0, math.pi, (25, 1, 1)).astype(np.float32)
        x = rng.uniform(-5, 5, (25, 20, 1)).astype(np.float32)
        y = amp * np.sin(x + phase)
        tasks = (x[:, :10], y[:, :10], x[:, 10:], y[:, 10:])
        return Sine(), tuple(jnp.asarray(a) for a in tasks), 0.01, 1
    model = OmniglotMLP(5) if name == "omni-mlp" else OmniglotConv(5)
    shape = (784,) if model.flat else (1, 28, 28)
    sx = rng.random((32, 5, *shape), dtype=np.float32)
    qx = rng.random((32, 75, *shape), dtype=np.float32)
    sy = np.tile(np.arange(5, dtype=np.int32), (32, 1))
    qy = np.tile(np.tile(np.arange(5, dtype=np.int32), 15), (32, 1))
    return model, tuple(jnp.asarray(a) for a in (sx, sy, qx, qy)), 0.4, 1


def time_steps(name, steps=20, warmup=3):
    """Median seconds of one meta-step of workload `name`, data on the device."""
    model, tasks, lr, inner = workload(name)
    step = make_step(model, lr, inner)
    params = model.init(jax.random.PRNGKey(0))
    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        params, m, v, loss = step(params, m, v, i + 1, tasks)
        jax.block_until_ready((params, loss))
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="median seconds of one meta-step")
    t.add_argument("--workload", choices=["sine", "omni-mlp", "omni-conv"], required=True)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    seconds = time_steps(a.workload, a.steps, a.warmup)
    print(json.dumps({"workload": a.workload, "median_seconds": seconds, "steps": a.steps,
                      "device": str(jax.devices()[0]), "jax": jax.__version__}))


if __name__ == "__main__":
    main()
