# lit configuration: FileCheck tests of every stage.  `%mamlc` and
# `%mamlc-opt` are the built tools; FileCheck and not come from LLVM 19.
# Where mamlc-mpi was built, the feature `mpi` is on, `%mamlc-mpi` is it and
# `%mpirun` starts MPI jobs (as root too, more processes than cores; without
# leak checks, as Open MPI keeps what MPI_Init allocates to the end).
import os
import sys
import lit.formats

config.name = "mamlc"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mdl", ".ir", ".test"]
config.excludes = ["Inputs"]

site = lit_config.params.get("site")
if site:
    lit_config.load_config(config, site)
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.mamlc_bin, lit_config.params.get("exec_root", "test"))

config.substitutions.append(("%mamlc-opt", os.path.join(config.mamlc_bin, "mamlc-opt")))
config.substitutions.append(("%bindir", config.mamlc_bin))
if getattr(config, "mamlc_mpi", "").upper() in ("1", "ON", "TRUE", "YES") or \
        os.environ.get("MAMLC_REQUIRE_DATA") == "1":
    config.available_features.add("mpi")
    config.substitutions.append(("%mamlc-mpi", os.path.join(config.mamlc_bin, "mamlc-mpi")))
    config.substitutions.append(("%mpirun", "mpirun --allow-run-as-root --oversubscribe -x LSAN_OPTIONS=detect_leaks=0"))
config.substitutions.append(("%mamlc", os.path.join(config.mamlc_bin, "mamlc")))
config.substitutions.append(("%srcroot", config.mamlc_src))
# Tests of generated code name the CPU they generate for (`--target-cpu=%cpu`),
# so that they check the compiler rather than the host; `--param cpu=NAME`
# runs them for another CPU model (CI runs test/backend for two).
config.substitutions.append(("%cpu", lit_config.params.get("cpu", "x86-64-v3")))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%exit", sys.executable + " " + os.path.join(config.mamlc_src, "test", "expect_exit.py")))
config.substitutions.append(("%data", os.path.join(os.path.dirname(config.mamlc_src), "shared", "data")))
config.environment["PATH"] = os.pathsep.join([config.llvm_bin, config.environment.get("PATH", "")])
for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "HOME", "TMPDIR"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

# Features a test can REQUIRE: without one, lit reports the test unsupported
# (ctest: Skipped).  Under MAMLC_REQUIRE_DATA=1 (CI) every feature is on, so
# that a missing data set, NumPy, Pillow or MPI fails the test instead.
require_all = os.environ.get("MAMLC_REQUIRE_DATA") == "1"
import importlib.util
# The Python example drivers for Omniglot need NumPy and Pillow.
if require_all or all(importlib.util.find_spec(m) for m in ("numpy", "PIL")):
    config.available_features.add("numpy-pil")
# examples/make_tasks.py (task files) needs NumPy alone.
if require_all or importlib.util.find_spec("numpy"):
    config.available_features.add("numpy")
data = os.path.join(os.path.dirname(config.mamlc_src), "shared", "data")
if require_all or os.path.isdir(os.path.join(data, "omniglot")):
    config.available_features.add("omniglot-data")
# mamlc plot's pictures are checked by rendering them with rsvg-convert
# (Debian's librsvg2-bin).
import shutil
if require_all or shutil.which("rsvg-convert"):
    config.available_features.add("rsvg")
