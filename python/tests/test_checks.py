"""Every argument check: each bad array raises TypeError or ValueError naming
the argument, and no call reaches C (the library's functions are replaced
by ones that fail the test if called)."""
import contextlib

import numpy as np
import pytest

import mamlc


class _NoC:
    def __getattr__(self, name):
        raise AssertionError(f"mamlc_{name} was called with a bad argument")


@contextlib.contextmanager
def no_c(model):
    """Within: any call into the library fails the test."""
    saved, model._c = model._c, _NoC()
    try:
        yield
    finally:
        model._c = saved


def refused(model, exc, match, fn, *args, **kw):
    with no_c(model), pytest.raises(exc, match=match):
        fn(*args, **kw)


@pytest.fixture(scope="module")
def batch(ways5):
    rng = np.random.default_rng(0)
    B = 3
    sx = rng.standard_normal((B, 25, 2)).astype(np.float32)
    sy = np.tile(np.repeat(np.arange(5, dtype=np.int32), 5), (B, 1))
    qx = rng.standard_normal((B, 50, 2)).astype(np.float32)
    qy = np.tile(np.repeat(np.arange(5, dtype=np.int32), 10), (B, 1))
    return sx, sy, qx, qy


def test_good_calls_pass(ways5, batch):
    params, state = ways5.init(seed=1)
    assert np.isfinite(ways5.meta_step(params, state, *batch))
    grad, loss = ways5.meta_grad(params, *batch)
    assert grad.shape == params.shape and np.isfinite(loss)
    fast = ways5.adapt(params, batch[0][0], batch[1][0], steps=2)
    assert 0.0 <= ways5.metric(fast, batch[2][0], batch[3][0]) <= 1.0


def test_wrong_dtype(ways5, batch):
    params, state = ways5.init(seed=1)
    sx, sy, qx, qy = batch
    refused(ways5, TypeError, r"^sx: expected dtype float32, got float64", ways5.meta_grad, params,
            sx.astype(np.float64), sy, qx, qy)
    refused(ways5, TypeError, r"^params: expected dtype float32", ways5.meta_step, params.astype(np.float64),
            state, *batch)
    refused(ways5, TypeError, r"^state: expected dtype float32", ways5.meta_step, params,
            state.astype(np.float16), *batch)
    refused(ways5, TypeError, r"^qx: expected dtype float32", ways5.loss, params, qx[0].astype(np.float64), qy[0])
    refused(ways5, TypeError, r"^sx: expected a NumPy array or a CPU tensor, not list", ways5.adapt, params,
            sx[0].tolist(), sy[0])


def test_int64_labels(ways5, batch):
    params, state = ways5.init(seed=1)
    sx, sy, qx, qy = batch
    refused(ways5, TypeError, r"^sy: expected dtype int32, got int64", ways5.meta_step, params, state, sx,
            sy.astype(np.int64), qx, qy)
    refused(ways5, TypeError, r"^qy: expected dtype int32, got int64", ways5.metric, params, qx[0],
            qy[0].astype(np.int64))


def test_wrong_shape(ways5, batch):
    params, state = ways5.init(seed=1)
    sx, sy, qx, qy = batch
    refused(ways5, ValueError, r"^sx: expected shape \(B, 25, 2\), got \(3, 25, 3\)", ways5.meta_grad, params,
            np.zeros((3, 25, 3), np.float32), sy, qx, qy)
    refused(ways5, ValueError, r"^qy: 2 tasks, but sx has 3", ways5.meta_grad, params, sx, sy, qx, qy[:2])
    refused(ways5, ValueError, r"^sx: expected shape \(25, 2\), got \(3, 25, 2\)", ways5.adapt, params, sx, sy)
    refused(ways5, ValueError, r"^params: expected shape \(%d,\)" % ways5.param_count, ways5.loss, params[:-1],
            qx[0], qy[0])
    refused(ways5, ValueError, r"^sx: 0 tasks", ways5.meta_grad, params, sx[:0], sy[:0], qx[:0], qy[:0])
    refused(ways5, ValueError, r"^x: expected shape \(B, 2\), got \(4, 3\)", ways5.predict, params,
            np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("bad", [7, 5, -1, 2**31 - 1, -2**31])
def test_labels_out_of_range(ways5, batch, bad):
    params, state = ways5.init(seed=1)
    sx, sy, qx, qy = batch
    sy2, qy2 = sy.copy(), qy.copy()
    sy2[2, 11] = bad
    qy2[0, 49] = bad
    refused(ways5, ValueError, rf"^sy: label {bad} at index \(2, 11\) is outside \[0, 5\)", ways5.meta_step,
            params, state, sx, sy2, qx, qy)
    refused(ways5, ValueError, rf"^qy: label {bad} at index \(0, 49\) is outside \[0, 5\)", ways5.meta_grad,
            params, sx, sy, qx, qy2)
    refused(ways5, ValueError, rf"^sy: label {bad} at index \(11,\)", ways5.adapt, params, sx[2], sy2[2])
    refused(ways5, ValueError, rf"^qy: label {bad} at index \(49,\)", ways5.metric, params, qx[0], qy2[0])
    refused(ways5, ValueError, rf"^qy: label {bad}", ways5.loss, params, qx[0], qy2[0])


def test_not_contiguous(ways5, batch):
    params, state = ways5.init(seed=1)
    sx, sy, qx, qy = batch
    fortran = np.asfortranarray(sx[0])
    refused(ways5, ValueError, r"^sx: not C-contiguous", ways5.adapt, params, fortran, sy[0])
    strided = np.zeros((3, 50, 2), np.float32)[:, ::2]
    refused(ways5, ValueError, r"^sx: not C-contiguous", ways5.meta_grad, params, strided, sy, qx, qy)
    every_other = np.zeros(2 * ways5.param_count, np.float32)[::2]
    refused(ways5, ValueError, r"^params: not C-contiguous", ways5.meta_step, every_other, state, *batch)


def test_read_only_and_aliased(ways5, batch):
    params, state = ways5.init(seed=1)
    frozen = params.copy()
    frozen.flags.writeable = False
    refused(ways5, ValueError, r"^params: read-only", ways5.meta_step, frozen, state, *batch)
    both = np.zeros(ways5.param_count + ways5.state_count, np.float32)
    refused(ways5, ValueError, r"^state: shares memory with params", ways5.meta_step,
            both[:ways5.param_count], both[ways5.param_count - 1:-1], *batch)


def test_other_arguments(ways5, sine, batch):
    params, _ = ways5.init(seed=1)
    refused(ways5, ValueError, r"^steps: a non-negative int", ways5.adapt, params, batch[0][0], batch[1][0],
            steps=-1)
    refused(ways5, ValueError, r"^sample_tasks: the library cannot draw tasks of kind 'external'",
            ways5.sample_tasks, 4)
    p, _ = sine.init(seed=1)
    refused(sine, ValueError, r"^metric: the model has no `def metric", sine.metric, p, np.zeros((10, 1), np.float32),
            np.zeros((10, 1), np.float32))
    refused(sine, ValueError, r"^B: 0 tasks", sine.sample_tasks, 0)
    refused(sine, ValueError, r"^seed: ", sine.init, seed=-1)


def test_loss_weights(build, sine):
    """MAML++'s multi-step loss weights: loss_weight_count finite reals of
    the model's dtype, or a ValueError naming loss_weights before C; the
    weights where the schedule ends give the plain meta-gradient."""
    m = build("examples/sine.mdl", meta={"inner_steps": 2, "multi_step_loss": "anneal(10)"})
    assert m.loss_weight_count == 2 and sine.loss_weight_count == 0
    params, state = m.init(seed=1)
    tasks = m.sample_tasks(4)
    g, loss = m.meta_grad(params, *tasks)
    gw, lw = m.meta_grad(params, *tasks, loss_weights=np.array([0, 1], np.float32))
    assert loss == lw and np.array_equal(g, gw)
    refused(m, ValueError, r"^loss_weights: expected shape \(2,\)", m.meta_grad, params, *tasks,
            loss_weights=np.ones(3, np.float32))
    refused(m, ValueError, r"^loss_weights: every weight must be finite", m.meta_step, params, state, *tasks,
            loss_weights=np.array([np.nan, 1], np.float32))
    refused(m, TypeError, r"^loss_weights: ", m.meta_step, params, state, *tasks,
            loss_weights=np.array([0, 1], np.float64))


def test_coupled_points(build):
    """A net that centres x on its batch mean couples the points: predicting
    another number of points would change every prediction, so it is an
    error that says so, before C."""
    m = build("test/driver/Inputs/points-mean.mdl")
    assert not m.any_points
    params, _ = m.init(seed=1)
    x = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    assert m.predict(params, x).shape == (6, 1)
    refused(m, ValueError, r"^x: 7 points, but this model's net couples its points .* exactly 6 at once",
            m.predict, params, np.zeros((7, 4), np.float32))


def test_compile_error(tmp_path, cache):
    bad = tmp_path / "bad.mdl"
    bad.write_text("param W : [1, 4] = he;\ndef loss(x, y) = mean((x @ transpose(V))^2);\n"
                   "task external { support x : [6, 4], y : [6]; query x : [6, 4], y : [6]; }\n")
    with pytest.raises(mamlc.CompileError) as e:
        mamlc.compile(str(bad), cache=cache)
    d = e.value.diagnostics[0]
    assert (d.file, d.line, d.col, d.message) == (str(bad), 2, 38, "unknown name 'V'")
    assert str(e.value).splitlines() == [f"{bad}:2:38: error: unknown name 'V'",
                                         "  def loss(x, y) = mean((x @ transpose(V))^2);",
                                         " " * 39 + "^"]
    bad.write_text("param W : [1, 4] = he;\n")
    with pytest.raises(mamlc.CompileError, match="missing task declaration") as e:
        mamlc.compile(str(bad), cache=cache)
    assert (e.value.diagnostics[0].file, e.value.diagnostics[0].line) == (str(bad), None)


def test_compile_option_errors(root, cache):
    with pytest.raises(mamlc.CompileError, match="NOPE"):
        mamlc.compile(str(root / "examples/sine.mdl"), defines={"NOPE": 3}, cache=cache)
    with pytest.raises(ValueError, match="^dtype: 'f32' or 'f64'"):
        mamlc.compile(str(root / "examples/sine.mdl"), dtype="f16", cache=cache)
    with pytest.raises(FileNotFoundError, match="is not an executable"):
        mamlc.compile(str(root / "examples/sine.mdl"), mamlc=str(root / "no-such-mamlc"), cache=cache)



def test_torch_tensors(ways5, batch):
    torch = pytest.importorskip("torch")
    params, state = ways5.init(seed=1)
    tp, ts = torch.from_numpy(params.copy()), torch.from_numpy(state.copy())
    args = [torch.from_numpy(a) for a in batch]
    loss = ways5.meta_step(tp, ts, *args)
    assert loss == ways5.meta_step(params, state, *batch)
    assert np.array_equal(tp.numpy(), params) and np.array_equal(ts.numpy(), state)   # updated in place
    refused(ways5, TypeError, r"^sy: expected dtype int32, got int64", ways5.meta_step, tp, ts, args[0],
            args[1].long(), args[2], args[3])
    refused(ways5, TypeError, r"^params: cannot read this Tensor", ways5.loss, tp.clone().requires_grad_(),
            args[2][0], args[3][0])
    bad = args[1].clone()
    bad[0, 0] = 7
    refused(ways5, ValueError, r"^sy: label 7", ways5.meta_grad, tp, args[0], bad, args[2], args[3])
