#!/bin/sh
# ctest's entry to the Python package's tests.
#   ctest.sh pytest PYTHON MAMLC            python/tests with the package of this tree
#   ctest.sh install PYTHON MAMLC WORKDIR   pip install --no-index --no-build-isolation
#       into a fresh virtual environment (--system-site-packages, for NumPy),
#       then examples/python/train_sine.py from it
# PYTHON must import NumPy and pytest (Debian: python3-numpy, python3-pytest,
# python3-venv); without one (PYTHON empty) this exits 77, Skipped, unless
# MAMLC_REQUIRE_DATA=1, which makes every test run.
set -eu
mode=$1 python=$2
export MAMLC=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "$python" ] || ! "$python" -c 'import numpy, pytest' 2>/dev/null; then
    echo "no Python with NumPy and pytest (set MAMLC_PYTHON when configuring)" >&2
    [ "${MAMLC_REQUIRE_DATA:-}" = 1 ] && exit 1
    exit 77
fi
case $mode in
pytest)
    export PYTHONPATH="$src/python" XDG_CACHE_HOME="${TMPDIR:-/tmp}/mamlc-pytest-$$"
    trap 'rm -rf "$XDG_CACHE_HOME"' EXIT
    cd "$src/python"
    exec "$python" -m pytest -q -p no:cacheprovider tests
    ;;
install)
    work=$4
    rm -rf "$work"
    mkdir -p "$work"
    # pip builds in the folder it is given: a copy, so the tree stays clean
    cp -R "$src/python" "$work/src"
    rm -rf "$work/src/build" "$work/src"/*.egg-info
    "$python" -m venv --system-site-packages "$work/venv"
    "$work/venv/bin/pip" install -q --no-index --no-build-isolation "$work/src"
    cd "$work"
    "$work/venv/bin/python" -c 'import mamlc, sys; assert mamlc.__file__.startswith(sys.prefix), mamlc.__file__'
    XDG_CACHE_HOME="$work/cache" "$work/venv/bin/python" "$src/examples/python/train_sine.py" \
        --iterations 1500 --eval-tasks 100 --expect-improvement
    ;;
esac
