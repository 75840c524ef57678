"""A library built by mamlc, driven through its C ABI (docs/abi.md)."""
import ctypes
import json
from collections import namedtuple

import numpy as np

from . import _check, _checkpoint

ABI = 2                                 # the version this package needs at least
EVAL_TASK = 1 << 63                     # runtime.h's RT_EVAL_TASK: held-out task numbers

Tasks = namedtuple("Tasks", "sx sy qx qy")
Tasks.__doc__ = "A meta-batch of tasks: support x and y, query x and y, each [B, ...]."

_V, _SZ, _I, _U64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint64


class _C:
    """The library's functions with their C signatures."""

    def __init__(self, path, real):
        lib = ctypes.CDLL(path)
        sig = {
            "mamlc_abi_version": (_I, []),
            "mamlc_model_json": (ctypes.c_char_p, []),
            "mamlc_param_count": (_SZ, []),
            "mamlc_state_count": (_SZ, []),
            "mamlc_init": (None, [_V, _V, _U64]),
            "mamlc_meta_grad": (real, [_V, _I, _V, _V, _V, _V, _V]),
            "mamlc_meta_step": (real, [_V, _V, _I, _V, _V, _V, _V]),
            "mamlc_adapt": (None, [_V, _I, _V, _V, _V]),
            "mamlc_loss": (real, [_V, _V, _V]),
            "mamlc_metric": (real, [_V, _V, _V]),
            "mamlc_predict_points": (_I, [_V, _SZ, _V, _V]),
            "mamlc_sample_tasks": (_I, [_U64, _U64, _I, _V, _V, _V, _V]),
        }
        self.lib = lib
        # version 3, looked up only where the library has them
        for name, restype, argtypes in (("mamlc_loss_weight_count", _I, []),
                                        ("mamlc_meta_grad_weighted", real, [_V, _I, _V, _V, _V, _V, _V, _I, _V]),
                                        ("mamlc_meta_step_weighted", real, [_V, _V, _I, _V, _V, _V, _V, _V, _I])):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[len("mamlc_"):], fn)
        for name, (restype, argtypes) in sig.items():
            fn = getattr(lib, name, None)
            if fn is None:
                raise OSError(f"{path}: no {name}: a library of ABI version {ABI} or later is needed "
                              f"(rebuild it with this mamlc)")
            fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name[len("mamlc_"):], fn)


def _ptr(a):
    return a.ctypes.data


class Model:
    """A compiled model: a library built by `mamlc MODEL -o LIB.so`
    (mamlc.compile builds one) opened for calls.

    Parameters and optimiser state are flat, contiguous 1-D arrays in the
    ABI's layout (`info["params"]` names each tensor's offset and shape;
    `tensors` gives views).  Task data are arrays of the model's field
    shapes, with a leading task axis B for a meta-batch.  Every call checks
    its arrays (dtype, shape, contiguity, i32 label ranges) and raises
    TypeError or ValueError naming the argument before anything reaches C."""

    def __init__(self, library):
        self.path = str(library)
        probe = ctypes.CDLL(self.path)
        probe.mamlc_model_json.restype = ctypes.c_char_p
        probe.mamlc_abi_version.restype = ctypes.c_int
        version = probe.mamlc_abi_version()
        if version < ABI:
            raise OSError(f"{self.path}: ABI version {version}; this package needs {ABI} or later "
                          f"(rebuild the library with this mamlc)")
        self.info = json.loads(probe.mamlc_model_json().decode())
        self.dtype = np.dtype(np.float32 if self.info["dtype"] == "f32" else np.float64)
        self._c = _C(self.path, ctypes.c_float if self.dtype == np.float32 else ctypes.c_double)
        self.param_count = int(self._c.param_count())
        self.state_count = int(self._c.state_count())
        # the multi-step loss weights the meta-step takes (version 3; 0 without multi_step_loss)
        self._weighted = self._c.meta_grad_weighted is not None
        self.loss_weight_count = int(self._c.loss_weight_count()) if self._weighted else 0
        self.fields = {}
        for part, prefix in (("support", "s"), ("query", "q")):
            for axis in ("x", "y"):
                f = self.info[part][axis]
                self.fields[prefix + axis] = (np.dtype(np.int32) if f["dtype"] == "i32" else self.dtype,
                                              tuple(f["shape"]), f.get("classes"))

    def __repr__(self):
        return f"<mamlc.Model {self.path} ({self.info['dtype']}, {self.param_count} parameters)>"

    # --- checks ---

    def _params(self, params, name="params", writable=False):
        return _check.array(name, params, self.dtype, (self.param_count,), writable)

    def _field(self, name, value, batched):
        dtype, shape, classes = self.fields[name[-2:]]
        a = _check.array(name, value, dtype, ((None,) if batched else ()) + shape)
        if dtype == np.int32:
            _check.labels(name, a, classes)
        return a

    def _tasks(self, sx, sy, qx, qy):
        names = ("sx", "sy", "qx", "qy")
        arrays = [self._field(n, v, True) for n, v in zip(names, (sx, sy, qx, qy))]
        B = _check.same_batch(names, arrays)
        _check.batch(B, "sx")
        return B, arrays

    # --- the ABI ---

    def init(self, seed=1):
        """(params, state): the initial parameters for seed, as `mamlc run
        --seed` makes them, and a zero optimiser state."""
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
            raise ValueError(f"seed: an integer in [0, 2^64), not {seed!r}")
        params = np.empty(self.param_count, self.dtype)
        state = np.empty(self.state_count, self.dtype)
        self._c.init(_ptr(params), _ptr(state), int(seed))
        return params, state

    def _loss_weights(self, loss_weights):
        """loss_weights checked: loss_weight_count finite reals of the model's
        dtype, for the library's *_weighted calls (ABI version 3)."""
        if not self._weighted:
            raise ValueError(f"loss_weights: {self.path} has no mamlc_meta_grad_weighted (ABI version 3); "
                             f"rebuild it with this mamlc to give the weights")
        n = self.loss_weight_count
        w = _check.array("loss_weights", loss_weights, self.dtype, (n,))
        if not np.all(np.isfinite(w)):
            raise ValueError("loss_weights: every weight must be finite")
        return w, n

    def meta_grad(self, params, sx, sy, qx, qy, loss_weights=None):
        """(grad, loss): the mean query loss of the meta-batch after the inner
        loop, and its gradient with respect to params.  loss_weights: the
        multi-step loss weights (loss_weight_count of them) instead of where
        their schedule ends."""
        params = self._params(params)
        B, (sx, sy, qx, qy) = self._tasks(sx, sy, qx, qy)
        grad = np.empty(self.param_count, self.dtype)
        if loss_weights is not None:
            w, n = self._loss_weights(loss_weights)
            loss = self._c.meta_grad_weighted(_ptr(params), B, _ptr(sx), _ptr(sy), _ptr(qx), _ptr(qy), _ptr(w), n,
                                              _ptr(grad))
        else:
            loss = self._c.meta_grad(_ptr(params), B, _ptr(sx), _ptr(sy), _ptr(qx), _ptr(qy), _ptr(grad))
        return grad, float(loss)

    def meta_step(self, params, state, sx, sy, qx, qy, loss_weights=None):
        """One meta-training step on the meta-batch: params and state updated
        in place (the outer optimiser, the step count as state's last real);
        returns the mean query loss.  loss_weights: the multi-step loss
        weights instead of those `mamlc run` takes at this step."""
        params = self._params(params, writable=True)
        state = _check.array("state", state, self.dtype, (self.state_count,), writable=True)
        if np.shares_memory(params, state):
            raise ValueError("state: shares memory with params")
        B, (sx, sy, qx, qy) = self._tasks(sx, sy, qx, qy)
        if loss_weights is not None:
            w, n = self._loss_weights(loss_weights)
            return float(self._c.meta_step_weighted(_ptr(params), _ptr(state), B, _ptr(sx), _ptr(sy), _ptr(qx),
                                                    _ptr(qy), _ptr(w), n))
        return float(self._c.meta_step(_ptr(params), _ptr(state), B, _ptr(sx), _ptr(sy), _ptr(qx), _ptr(qy)))

    def adapt(self, params, sx, sy, steps=None):
        """The parameters after `steps` inner steps (default: the model's
        inner_steps) on one task's support set, as a new array."""
        params = self._params(params)
        sx, sy = self._field("sx", sx, False), self._field("sy", sy, False)
        steps = self.info["meta"]["inner_steps"] if steps is None else steps
        if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 0 <= steps < 1 << 31:
            raise ValueError(f"steps: a non-negative int, not {steps!r}")
        out = np.empty(self.param_count, self.dtype)
        self._c.adapt(_ptr(params), int(steps), _ptr(sx), _ptr(sy), _ptr(out))
        return out

    def loss(self, params, qx, qy):
        """The loss of one query set at params."""
        params = self._params(params)
        qx, qy = self._field("qx", qx, False), self._field("qy", qy, False)
        return float(self._c.loss(_ptr(params), _ptr(qx), _ptr(qy)))

    def metric(self, params, qx, qy):
        """The model's `def metric` on one query set at params: the same
        compiled function, on the same reals, as `mamlc run` evaluates."""
        if not self.info.get("metric"):
            raise ValueError("metric: the model has no `def metric(x, y)`")
        params = self._params(params)
        qx, qy = self._field("qx", qx, False), self._field("qy", qy, False)
        return float(self._c.metric(_ptr(params), _ptr(qx), _ptr(qy)))

    @property
    def any_points(self):
        """Whether predict takes any number of points (each row of net(x)
        comes from its own point), or only the query set's."""
        return bool(self.info.get("predict_any_points"))

    def predict(self, params, x):
        """net(x) for the points of x, [n, ...point shape]: any n where each
        row of the net comes from its own point (run in chunks of the
        compiled query size); where the model couples its points (a batch
        statistic such as batch_norm, a mean over the points, a reshape that
        mixes them) only the query set's number."""
        if not self.info.get("predict"):
            raise ValueError("predict: the model has no `def net(x)`")
        params = self._params(params)
        qshape = self.fields["qx"][1]
        out_shape = tuple(self.info["predict_shape"])
        if self.any_points:
            x = _check.array("x", x, self.dtype, (None,) + qshape[1:])
            n = x.shape[0]
            shape = (n,) + out_shape[1:]
        else:
            a = _check.as_array("x", x)
            if a.ndim >= 1 and a.shape[0] != qshape[0] and a.shape[1:] == qshape[1:]:
                raise ValueError(f"x: {a.shape[0]} points, but this model's net couples its points (a batch "
                                 f"statistic such as batch_norm, or an op that mixes rows), so it predicts "
                                 f"exactly {qshape[0]} at once: chunks would change the result")
            x = _check.array("x", a, self.dtype, qshape)
            n, shape = qshape[0], out_shape
        out = np.empty(shape, self.dtype)
        if self._c.predict_points(_ptr(params), n, _ptr(x), _ptr(out)) != 0:
            raise RuntimeError("mamlc_predict_points refused checked arguments (out of memory?)")
        return out

    def sample_tasks(self, B, seed=1, first=0, held_out=False):
        """B tasks of the model's own task source (sinusoid, task family) as
        `mamlc run --seed seed` draws them: tasks first, ..., first + B - 1.
        Iteration i of `mamlc run` trains on tasks i * meta_batch + b
        (first = i * meta_batch); held_out=True gives its evaluation tasks
        (task k of every evaluation is held-out task k)."""
        _check.batch(B, "B")
        if not self.info.get("sample_tasks"):
            raise ValueError(f"sample_tasks: the library cannot draw tasks of kind {self.info['task']!r} "
                             f"(only sinusoid and task families need no data)")
        if not isinstance(first, (int, np.integer)) or not (0 <= first and first + B <= EVAL_TASK):
            raise ValueError(f"first: an integer in [0, 2^63 - B], not {first!r}")
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 64:
            raise ValueError(f"seed: an integer in [0, 2^64), not {seed!r}")
        arrays = [np.empty((B,) + shape, dtype) for dtype, shape, _ in self.fields.values()]
        base = (EVAL_TASK if held_out else 0) + int(first)
        if self._c.sample_tasks(int(seed), base, B, *map(_ptr, arrays)) != B:
            raise RuntimeError("mamlc_sample_tasks refused checked arguments (out of memory?)")
        return Tasks(*arrays)

    # --- parameters ---

    def tensors(self, params):
        """{name: view of params with the tensor's shape}, in the ABI's order."""
        params = self._params(params)
        return {p["name"]: params[p["offset"]:p["offset"] + int(np.prod(p["shape"], dtype=np.int64))]
                .reshape(p["shape"]) for p in self.info["params"]}

    def save(self, path, params, state=None):
        """Write params (and state) as a checkpoint `mamlc eval --load` and
        `mamlc run --resume` read (written atomically)."""
        params = self._params(params)
        if state is not None:
            state = _check.array("state", state, self.dtype, (self.state_count,))
        _checkpoint.save(path, self.info, params, state)

    def load(self, path):
        """(params, state) from a checkpoint of this model (Model.save's, or
        `mamlc run --save`'s); state is None when the file holds none."""
        return _checkpoint.load(path, self.info, self.param_count, self.state_count)
