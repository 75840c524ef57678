"""Fixtures: the compiler ($MAMLC, else the build tree's), the repository,
and libraries compiled once per session into a cache of the session's own."""
import os
import pathlib
import subprocess

import pytest

import mamlc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    if not os.environ.get("MAMLC"):
        built = ROOT / "build" / "mamlc"
        if not built.exists():
            raise pytest.UsageError("set $MAMLC to the mamlc executable these tests compile with")
        os.environ["MAMLC"] = str(built)


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def build(cache):
    """build(model path relative to the repository, **compile options)."""
    def make(path, **kw):
        return mamlc.compile(str(ROOT / path), cache=cache, **kw)
    return make


@pytest.fixture(scope="session")
def sine(build):
    return build("examples/sine.mdl")


@pytest.fixture(scope="session")
def ways5(build):
    """examples/external.mdl as a 5-way task: labels in [0, 5)."""
    return build("examples/external.mdl", defines={"N": 5})


@pytest.fixture
def cli(tmp_path):
    """cli(*args): run the compiler in tmp_path; its stdout, or a failure with its stderr."""
    def run(*args):
        out = subprocess.run([os.environ["MAMLC"], *map(str, args)], cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout
    return run
