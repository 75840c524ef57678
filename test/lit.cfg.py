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
config.test_exec_root = os.path.join(config.mamlc_bin, "test")

config.substitutions.append(("%mamlc-opt", os.path.join(config.mamlc_bin, "mamlc-opt")))
if getattr(config, "mamlc_mpi", "").upper() in ("1", "ON", "TRUE", "YES"):
    config.available_features.add("mpi")
    config.substitutions.append(("%mamlc-mpi", os.path.join(config.mamlc_bin, "mamlc-mpi")))
    config.substitutions.append(("%mpirun", "mpirun --allow-run-as-root --oversubscribe -x LSAN_OPTIONS=detect_leaks=0"))
config.substitutions.append(("%mamlc", os.path.join(config.mamlc_bin, "mamlc")))
config.substitutions.append(("%srcroot", config.mamlc_src))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%exit", sys.executable + " " + os.path.join(config.mamlc_src, "test", "expect_exit.py")))
config.substitutions.append(("%data", os.path.join(os.path.dirname(config.mamlc_src), "shared", "data")))
config.environment["PATH"] = os.pathsep.join([config.llvm_bin, config.environment.get("PATH", "")])
for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "HOME", "TMPDIR"):
    if var in os.environ:
        config.environment[var] = os.environ[var]

# The Python example drivers for Omniglot need NumPy and Pillow.
import importlib.util
if all(importlib.util.find_spec(m) for m in ("numpy", "PIL")):
    config.available_features.add("numpy-pil")
