"""The package's results against the compiler's own: training, evaluation,
the metric, tasks and checkpoints give the bits `mamlc run` and `mamlc
eval` give (the library and the JIT compile the same code for this CPU)."""
import json
import os

import numpy as np
import pytest

import mamlc


def report(path):
    with open(path) as f:
        return json.load(f)


def evaluate(m, params, tasks, steps):
    """runtime/train.c's rt_evaluate over these tasks: per step count, the
    mean query loss (and metric), summed in double in task order."""
    out = []
    for k in steps:
        loss = metric = 0.0
        for t in range(len(tasks[0])):
            fast = m.adapt(params, tasks[0][t], tasks[1][t], steps=k)
            loss += m.loss(fast, tasks[2][t], tasks[3][t])
            if m.info["metric"]:
                metric += m.metric(fast, tasks[2][t], tasks[3][t])
        out.append((loss / len(tasks[0]), metric / len(tasks[0])))
    return out


@pytest.mark.parametrize("model", ["examples/sine.mdl", "examples/sine_family.mdl"])
def test_training_is_mamlc_run(build, root, cli, tmp_path, model):
    """init, sample_tasks (task i * meta_batch + b at iteration i), meta_step
    and the checkpoint: three iterations give `mamlc run`'s parameters and
    optimiser state, bit for bit."""
    m = build(model, meta={"meta_batch": 4})
    cli("run", root / model, "--meta", "meta_batch=4", "--iters", 3, "--seed", 7, "--save", "run.safetensors",
        "--save-state", "--eval-tasks", 2, "--quiet", "--report", "run.json")
    params, state = m.init(seed=7)
    for it in range(3):
        loss = m.meta_step(params, state, *m.sample_tasks(4, seed=7, first=4 * it))
    cli_params, cli_state = m.load(str(tmp_path / "run.safetensors"))
    assert params.tobytes() == cli_params.tobytes()
    assert state.tobytes() == cli_state.tobytes() and state[-1] == 3
    assert np.float32(loss) == np.float32(report(tmp_path / "run.json")["final_meta_loss"])


def test_meta_grad_is_meta_step(sine):
    """meta_grad is the gradient meta_step applies: Adam's first step moves
    every parameter by lr * sign(grad) (to within eps)."""
    params, state = sine.init(seed=3)
    tasks = sine.sample_tasks(5, seed=3)
    grad, loss = sine.meta_grad(params, *tasks)
    before = params.copy()
    assert sine.meta_step(params, state, *tasks) == loss
    moved = np.abs(grad) > 1e-4                        # where Adam's eps does not matter
    assert moved.sum() > params.size // 2
    np.testing.assert_allclose((before - params)[moved], 0.001 * np.sign(grad[moved]), rtol=1e-3, atol=1e-6)


def test_evaluation_is_mamlc_eval(sine, root, cli, tmp_path):
    """adapt and loss on the held-out tasks (sample_tasks(held_out=True)) give
    `mamlc eval`'s figures exactly, for a checkpoint Model.save wrote."""
    params, state = sine.init(seed=5)
    for it in range(2):
        sine.meta_step(params, state, *sine.sample_tasks(25, seed=5, first=25 * it))
    sine.save(str(tmp_path / "ck.safetensors"), params, state)
    cli("eval", root / "examples/sine.mdl", "--load", "ck.safetensors", "--eval-tasks", 6, "--seed", 11,
        "--report", "eval.json")
    mine = evaluate(sine, params, sine.sample_tasks(6, seed=11, held_out=True), [0, 1, 10])
    theirs = report(tmp_path / "eval.json")["eval"]
    assert [e["loss"] for e in theirs] == [loss for loss, _ in mine]


def write_tasks(path, arrays):
    """A task file (docs/language.md, "Task files") through the package's
    own safetensors writer's format."""
    import struct
    codes = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
    header, at = {}, 0
    for name in sorted(arrays):
        a = arrays[name]
        header[name] = {"dtype": codes[a.dtype], "shape": list(a.shape), "data_offsets": [at, at + a.nbytes]}
        at += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(arrays[n].tobytes() for n in sorted(arrays)))


def test_metric_is_mamlc_eval(ways5, root, cli, tmp_path):
    """mamlc_metric (and mamlc_loss) after 0 and 1 inner steps, averaged over
    a task file, equal `mamlc eval --tasks`'s figures bit for bit."""
    rng = np.random.default_rng(4)
    T = 7
    centres = rng.uniform(-3, 3, (T, 5, 1, 2))
    points = (centres + 0.6 * rng.standard_normal((T, 5, 15, 2))).astype(np.float32)
    labels = np.broadcast_to(np.arange(5, dtype=np.int32)[None, :, None], (T, 5, 15))
    tasks = (np.ascontiguousarray(points[:, :, :5].reshape(T, 25, 2)),
             np.ascontiguousarray(labels[:, :, :5].reshape(T, 25)),
             np.ascontiguousarray(points[:, :, 5:].reshape(T, 50, 2)),
             np.ascontiguousarray(labels[:, :, 5:].reshape(T, 50)))
    write_tasks(tmp_path / "tasks.safetensors", dict(zip(["support_x", "support_y", "query_x", "query_y"], tasks)))
    params, state = ways5.init(seed=2)
    for it in range(20):
        ways5.meta_step(params, state, *tasks)
    ways5.save(str(tmp_path / "ck.safetensors"), params)
    cli("eval", root / "examples/external.mdl", "-D", "N=5", "--load", "ck.safetensors", "--tasks",
        "tasks.safetensors", "--report", "eval.json")
    theirs = report(tmp_path / "eval.json")["eval"]
    mine = evaluate(ways5, params, tasks, [0, 1])
    assert [(e["loss"], e["metric"]) for e in theirs] == mine
    assert 0.0 < mine[1][1] <= 1.0


def test_resume_from_a_package_checkpoint(sine, root, cli, tmp_path):
    """`mamlc run --resume` continues from Model.save's parameters and state
    as the package would."""
    params, state = sine.init(seed=9)
    sine.meta_step(params, state, *sine.sample_tasks(25, seed=9, first=0))
    sine.save(str(tmp_path / "ck.safetensors"), params, state)
    cli("run", root / "examples/sine.mdl", "--resume", "ck.safetensors", "--iters", 2, "--seed", 9, "--save",
        "ck.safetensors", "--save-state", "--eval-tasks", 2, "--quiet")
    sine.meta_step(params, state, *sine.sample_tasks(25, seed=9, first=25))
    p2, s2 = sine.load(str(tmp_path / "ck.safetensors"))
    assert p2.tobytes() == params.tobytes() and s2.tobytes() == state.tobytes()


def test_predict_any_number_of_points(sine):
    """Chunks of the compiled 10 points, the last one padded: every point's
    prediction is the same bits alone, in any chunk, and agrees with the
    loss."""
    params, _ = sine.init(seed=1)
    tasks = sine.sample_tasks(1, seed=1)
    fast = sine.adapt(params, tasks.sx[0], tasks.sy[0], steps=5)
    x = np.linspace(-5, 5, 23, dtype=np.float32)[:, None]
    y = sine.predict(fast, x)
    assert y.shape == (23, 1) and np.isfinite(y).all()
    for i in range(23):
        assert sine.predict(fast, x[i:i + 1]).tobytes() == y[i:i + 1].tobytes()
    assert sine.predict(fast, x[3:13]).tobytes() == y[3:13].tobytes()
    assert sine.predict(fast, x[:0]).shape == (0, 1)
    q = sine.predict(fast, tasks.qx[0])
    np.testing.assert_allclose(np.mean((q - tasks.qy[0]) ** 2), sine.loss(fast, tasks.qx[0], tasks.qy[0]),
                               rtol=1e-5)


def test_save_load_and_tensors(sine, tmp_path):
    params, state = sine.init(seed=4)
    sine.meta_step(params, state, *sine.sample_tasks(3, seed=4))
    sine.save(str(tmp_path / "a.safetensors"), params, state)
    p, s = sine.load(str(tmp_path / "a.safetensors"))
    assert p.tobytes() == params.tobytes() and s.tobytes() == state.tobytes()
    sine.save(str(tmp_path / "b.safetensors"), params)
    p, s = sine.load(str(tmp_path / "b.safetensors"))
    assert s is None and p.tobytes() == params.tobytes()
    views = sine.tensors(params)
    assert [(n, v.shape) for n, v in views.items()] == [(t["name"], tuple(t["shape"])) for t in sine.info["params"]]
    views["b3"][0] = 42.0
    assert params[sine.info["params"][-1]["offset"]] == 42.0


def test_load_refuses_another_model(sine, ways5, tmp_path):
    params, _ = ways5.init(seed=1)
    ways5.save(str(tmp_path / "w.safetensors"), params)
    with pytest.raises(ValueError, match=r"w.safetensors: saved from a different model"):
        sine.load(str(tmp_path / "w.safetensors"))


def test_sample_tasks_reproducible(sine, build):
    a, b = sine.sample_tasks(4, seed=8), sine.sample_tasks(4, seed=8)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    c = sine.sample_tasks(4, seed=9)
    assert a.sx.tobytes() != c.sx.tobytes()
    one = sine.sample_tasks(1, seed=8, first=2)
    assert all(x[2].tobytes() == y[0].tobytes() for x, y in zip(a, one))
    held = sine.sample_tasks(4, seed=8, held_out=True)
    assert held.sx.tobytes() != a.sx.tobytes()
    # y = A sin(x - phase) with A in [0.1, 5): every task's points lie on one sinusoid
    assert np.abs(a.sy).max() < 5.0 and ((-5 <= a.sx) & (a.sx < 5)).all()
    fam = build("examples/sine_family.mdl")
    t = fam.sample_tasks(2, seed=8)
    assert t.sx.shape == (2, 10, 1) and np.abs(t.sy).max() < 5.0


def test_cache(root, tmp_path):
    """One library per source text, options, CPU and compiler; a second
    compile finds it."""
    model = tmp_path / "m.mdl"
    model.write_text((root / "examples/sine.mdl").read_text())
    cache = str(tmp_path / "cache")
    a = mamlc.compile(str(model), cache=cache)
    stamp = os.stat(a.path).st_mtime_ns
    again = mamlc.compile(str(model), cache=cache)
    assert again.path == a.path and os.stat(a.path).st_mtime_ns == stamp
    paths = {a.path,
             mamlc.compile(str(model), defines={"K": 5}, cache=cache).path,
             mamlc.compile(str(model), meta={"inner_steps": 2}, cache=cache).path,
             mamlc.compile(str(model), dtype="f64", cache=cache).path,
             mamlc.compile(str(model), target_cpu="x86-64", cache=cache).path}
    assert len(paths) == 5
    model.write_text(model.read_text().replace("dim K = 10", "dim K = 6"))
    changed = mamlc.compile(str(model), cache=cache)
    assert changed.path not in paths and changed.fields["sx"][1] == (6, 1)
    assert sorted(os.listdir(cache)) == sorted(p for q in paths | {changed.path}
                                               for p in (os.path.basename(q), os.path.basename(q)[:-3] + ".h"))


def test_options_reach_the_compiler(build):
    m = build("examples/sine.mdl", dtype="f64", defines={"K": 5}, meta={"inner_steps": 2})
    assert m.dtype == np.float64 and m.fields["sx"][1] == (5, 1) and m.info["meta"]["inner_steps"] == 2
    params, state = m.init(seed=1)
    assert np.isfinite(m.meta_step(params, state, *m.sample_tasks(2, seed=1)))
