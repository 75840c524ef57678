"""Start an MPI job, kill -9 one of its ranks once CHECKPOINT exists, and
check that the job then ends by itself within 30 seconds with a non-zero
exit.

usage: kill_rank.py RANK CHECKPOINT MPIRUN [ARGS...]

Prints the job's exit status and its standard error, for FileCheck."""
import os
import signal
import subprocess
import sys
import time

rank, checkpoint, command = sys.argv[1], sys.argv[2], sys.argv[3:]
job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       start_new_session=True)


def descendants(pid):
    """Every process below pid, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for var in f.read().split(b"\0"):
                if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return var.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return None


def fail(message):
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    sys.exit(f"kill_rank.py: {message}")


deadline = time.monotonic() + 120
while not os.path.exists(checkpoint):
    if job.poll() is not None:
        fail(f"the job ended (status {job.returncode}) before writing {checkpoint}: {job.stderr.read()}")
    if time.monotonic() > deadline:
        fail(f"no checkpoint {checkpoint} after 120 s")
    time.sleep(0.05)
victims = [p for p in descendants(job.pid) if rank_of(p) == rank]
if not victims:
    fail(f"no process of rank {rank} under mpirun")
os.kill(victims[0], signal.SIGKILL)
killed = time.monotonic()
try:
    _, err = job.communicate(timeout=30)
except subprocess.TimeoutExpired:
    fail("the job still runs 30 s after a rank was killed")
print(f"exit status {job.returncode} after {time.monotonic() - killed:.1f} s")
print(err)
sys.exit(0 if job.returncode != 0 else 1)
