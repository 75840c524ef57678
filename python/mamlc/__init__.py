"""mamlc from Python: compile a meta-learning model (.mdl) into a shared
library and drive it with NumPy arrays or PyTorch CPU tensors.

    import mamlc
    m = mamlc.compile("examples/sine.mdl", dtype="f32", defines={"K": 5})
    params, state = m.init(seed=1)
    tasks = m.sample_tasks(25, seed=1)
    loss = m.meta_step(params, state, *tasks)

See docs/python.md.
"""
from ._compile import CompileError, Diagnostic, cache_dir, compiler_version, find_compiler
from ._compile import build as _build
from ._model import ABI, EVAL_TASK, Model, Tasks

__all__ = ["compile", "open_library", "Model", "Tasks", "CompileError", "Diagnostic", "ABI", "EVAL_TASK",
           "cache_dir", "compiler_version", "find_compiler"]
__version__ = "0.1.0"


def compile(source, dtype="f32", defines=None, meta=None, target_cpu=None, mamlc=None, cache=None):
    """Compile the model file `source` into a library and open it.

    dtype: "f32" or "f64"; defines: {dim: value} (-D); meta: {key: value}
    (--meta, e.g. {"inner_steps": 2}); target_cpu: the CPU to generate code
    for (default: this machine's).  The compiler is `mamlc`, else $MAMLC,
    else mamlc on PATH.  Libraries are cached (in `cache`, else $MAMLC_CACHE,
    else $XDG_CACHE_HOME/mamlc or ~/.cache/mamlc) under a hash of the source
    text, the options, the target CPU and the compiler's version.  Raises
    CompileError, with the compiler's located diagnostics, for a model the
    compiler refuses."""
    return Model(_build(source, dtype, defines, meta, target_cpu, mamlc, cache))


def open_library(path):
    """Open a library built by `mamlc MODEL -o LIB.so`."""
    return Model(path)
