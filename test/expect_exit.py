"""Run a command and check its exit status: expect_exit.py STATUS CMD [ARGS...].

lit's `not` only tells zero from non-zero; mamlc promises 1 for input errors
and 2 for usage errors, and this checks which."""
import subprocess
import sys

want = int(sys.argv[1])
got = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
if got != want:
    sys.exit(f"expected exit status {want}, got {got}: {' '.join(sys.argv[2:])}")
