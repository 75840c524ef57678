"""A library built with -o --device cuda, where the CUDA driver cannot be
loaded: the host-pointer meta-step refuses with NaN and says why, the
device-pointer entry points exist, and the CPU entry points still work.
gpu_nodriver.py LIB.so"""
import ctypes
import math
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.mamlc_param_count.restype = ctypes.c_size_t
lib.mamlc_state_count.restype = ctypes.c_size_t
lib.mamlc_meta_grad.restype = ctypes.c_float
lib.mamlc_meta_step.restype = ctypes.c_float
lib.mamlc_loss.restype = ctypes.c_float
lib.mamlc_cuda_error.restype = ctypes.c_char_p
n = lib.mamlc_param_count()
params = (ctypes.c_float * n)()
state = (ctypes.c_float * lib.mamlc_state_count())()
grad = (ctypes.c_float * n)()
lib.mamlc_init(params, state, ctypes.c_uint64(1))
data = (ctypes.c_float * (4 * 10))()
before = list(params)
print("meta_grad", lib.mamlc_meta_grad(params, 4, data, data, data, data, grad))
print("meta_step", lib.mamlc_meta_step(params, state, 4, data, data, data, data))
print("params unchanged", list(params) == before)
print("error:", lib.mamlc_cuda_error().decode())
print("device entry points", all(hasattr(lib, f) for f in ("mamlc_cuda_meta_grad", "mamlc_cuda_meta_step")))
print("cpu loss finite", math.isfinite(lib.mamlc_loss(params, data, data)))
