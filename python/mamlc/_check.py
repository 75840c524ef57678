"""Argument checks: every array that goes to C is checked here first, and a
bad one raises TypeError (its kind or dtype) or ValueError (its shape,
layout or values), naming the argument."""
import numpy as np


def _tensor_view(name, value):
    """A NumPy view of a tensor, without a copy: a PyTorch CPU tensor through
    Tensor.numpy() (writable), another DLPack tensor through np.from_dlpack
    (which NumPy may make read-only)."""
    try:
        if type(value).__module__.split(".")[0] == "torch":
            return value.numpy()
        return np.from_dlpack(value)
    except (RuntimeError, TypeError, BufferError, ValueError) as e:
        device = getattr(value, "device", None)
        where = f" on device {device}" if device is not None and str(device) != "cpu" else ""
        raise TypeError(f"{name}: cannot read this {type(value).__name__}{where} as a CPU array "
                        f"without a copy ({e}); give a CPU tensor (tensor.detach().cpu()) or a NumPy array") from None


def as_array(name, value):
    """value as a NumPy array sharing its memory: an ndarray as it is, a
    tensor (PyTorch, DLPack) or an object with __array_interface__ as a
    view.  Anything else is refused: a list would be copied, and writes to
    the copy lost."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        return _tensor_view(name, value)
    if hasattr(value, "__array_interface__"):
        return np.asarray(value)
    raise TypeError(f"{name}: expected a NumPy array or a CPU tensor, not {type(value).__name__}")


def _dtype_hint(dtype):
    return f".astype(np.{np.dtype(dtype).name})"


def array(name, value, dtype, shape, writable=False):
    """value checked to be a C-contiguous, aligned array of exactly `dtype`
    (native byte order) and `shape` (a tuple; None in it takes any
    extent), writable if asked."""
    a = as_array(name, value)
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {a.dtype}"
                        f" (convert with {_dtype_hint(dtype)})")
    want = tuple(shape)
    if a.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, a.shape)):
        shown = "(" + ", ".join("B" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {shown}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: not C-contiguous (np.ascontiguousarray({name}) is a contiguous copy)")
    if not a.flags.aligned:
        raise ValueError(f"{name}: not aligned to its dtype")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name}: read-only, but this call writes to it")
    return a


def labels(name, a, classes):
    """Raise ValueError unless every label of the int32 array a lies in
    [0, classes) (classes None: any value goes)."""
    if classes is None or a.size == 0:
        return
    bad = (a < 0) | (a >= classes)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: label {int(a[at])} at index {at} is outside [0, {classes}) "
                         f"(the model's loss has {classes} classes)")


def batch(B, name):
    """Raise unless B is a task count the library takes."""
    if not isinstance(B, (int, np.integer)) or isinstance(B, bool):
        raise TypeError(f"{name}: expected an int, not {type(B).__name__}")
    if not 1 <= B <= 1 << 20:
        raise ValueError(f"{name}: {B} tasks; a meta-batch holds 1 to 1048576")


def same_batch(names, arrays):
    """Raise ValueError unless every array has the first one's batch extent."""
    B = arrays[0].shape[0]
    for n, a in zip(names[1:], arrays[1:]):
        if a.shape[0] != B:
            raise ValueError(f"{n}: {a.shape[0]} tasks, but {names[0]} has {B}")
    return B
