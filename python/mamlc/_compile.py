"""Running the mamlc compiler, and the cache of the libraries it builds."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

_DIAG = re.compile(r"^(?P<file>[^\n:]+?)(?::(?P<line>\d+):(?P<col>\d+))?: error: (?P<message>.*)$", re.M)


class Diagnostic:
    """One error of the compiler: file, line and column (1-based; None
    where the error has no place in the file), and the message."""

    def __init__(self, file, line, col, message):
        self.file, self.line, self.col, self.message = file, line, col, message

    def __repr__(self):
        where = f":{self.line}:{self.col}" if self.line else ""
        return f"{self.file}{where}: error: {self.message}"


class CompileError(Exception):
    """The compiler refused the model.  str() is the compiler's whole
    output (each error with its source line and caret); `diagnostics` the
    located errors parsed from it; `stderr` the raw text."""

    def __init__(self, stderr, command=None):
        self.stderr = stderr
        self.command = command
        self.diagnostics = [Diagnostic(m["file"], m["line"] and int(m["line"]), m["col"] and int(m["col"]),
                                       m["message"]) for m in _DIAG.finditer(stderr)]
        super().__init__(stderr.rstrip() or "mamlc failed without a message")


def find_compiler(mamlc=None):
    """The mamlc executable: `mamlc`, else $MAMLC, else mamlc on PATH."""
    path = mamlc or os.environ.get("MAMLC") or shutil.which("mamlc")
    if not path:
        raise FileNotFoundError("no mamlc compiler: set $MAMLC to its path or put mamlc on PATH")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise FileNotFoundError(f"the mamlc compiler '{path}' is not an executable file")
    return os.path.abspath(path)


def compiler_version(mamlc):
    """`mamlc --version`'s line, which the cache key includes."""
    out = subprocess.run([mamlc, "--version"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise CompileError(out.stderr, [mamlc, "--version"])
    return out.stdout.strip()


def _host_cpu():
    """What tells this machine's CPU apart, for a library built for the host."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f if l.startswith(("model name", "flags", "vendor_id", "cpu family", "model\t"))]
        return "host:" + hashlib.sha256("".join(sorted(set(lines))).encode()).hexdigest()[:16]
    except OSError:
        import platform
        return "host:" + platform.machine() + ":" + platform.processor()


def cache_dir(explicit=None):
    """Where built libraries are kept: `explicit`, else $MAMLC_CACHE,
    else $XDG_CACHE_HOME/mamlc, else ~/.cache/mamlc."""
    if explicit:
        return explicit
    if os.environ.get("MAMLC_CACHE"):
        return os.environ["MAMLC_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mamlc")


def _value(v):
    """A define's or meta key's value as the command line takes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def options(dtype, defines, meta, target_cpu):
    """The compiler's options for these settings."""
    if dtype not in ("f32", "f64"):
        raise ValueError(f"dtype: 'f32' or 'f64', not {dtype!r}")
    args = [f"--dtype={dtype}"]
    for name, value in sorted((defines or {}).items()):
        args += ["-D", f"{name}={_value(value)}"]
    for key, value in sorted((meta or {}).items()):
        args += ["--meta", f"{key}={_value(value)}"]
    if target_cpu:
        args.append(f"--target-cpu={target_cpu}")
    return args


def build(source, dtype="f32", defines=None, meta=None, target_cpu=None, mamlc=None, cache=None):
    """The path of the library of `source` built with these settings: from
    the cache when an equal build is there (same source text, options,
    target CPU and compiler version), else built by the compiler into it.
    Raises CompileError with the compiler's diagnostics."""
    compiler = find_compiler(mamlc)
    args = options(dtype, defines, meta, target_cpu)
    with open(source, "rb") as f:
        text = f.read()
    key = hashlib.sha256(json.dumps({
        "source": hashlib.sha256(text).hexdigest(),
        "options": args,
        "cpu": target_cpu or _host_cpu(),
        "compiler": compiler_version(compiler),
    }, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_dir(cache)
    lib = os.path.join(folder, f"{key}.so")
    if os.path.exists(lib):
        return lib
    os.makedirs(folder, exist_ok=True)
    # Built beside its place and renamed there, so that a concurrent build
    # or a killed one never leaves half a library under the key.
    tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=folder)
    try:
        out = os.path.join(tmp, "train.so")
        command = [compiler, os.fspath(source), "-o", out] + args
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise CompileError(run.stderr, command)
        os.replace(out, lib)
        os.replace(os.path.join(tmp, "train.h"), os.path.join(folder, f"{key}.h"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib
