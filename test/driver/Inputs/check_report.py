"""Check a `mamlc run --report` file: its fields, and that adaptation helps."""
import json
import sys

report = json.load(open(sys.argv[1]))
iterations = int(sys.argv[2])
assert report["iterations"] == iterations, report
assert report["seconds"] > 0 and report["steps_per_second"] > 0, report
steps = {e["steps"]: e["loss"] for e in report["eval"]}
assert sorted(steps) == [0, 1, 10], steps
# After meta-training, one inner step must cut the query loss clearly, and ten
# steps cut it further.
assert steps[1] < 0.7 * steps[0], steps
assert steps[10] < steps[1], steps
assert steps[1] < 2.0, steps
print("report ok:", steps)
