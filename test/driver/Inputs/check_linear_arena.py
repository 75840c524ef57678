"""Check that the meta-step arena grows linearly with the inner steps.

Arguments: `mamlc --stats` outputs for 1, 2, 5 and 10 inner steps."""
import re
import sys

steps = [1, 2, 5, 10]
arena = []
for path in sys.argv[1:]:
    text = open(path).read()
    arena.append(int(re.search(r"arena\s+(\d+) bytes \(meta_step\)", text).group(1)))
print("arena bytes for", dict(zip(steps, arena)))
per_step_25 = (arena[2] - arena[1]) / 3
per_step_510 = (arena[3] - arena[2]) / 5
assert arena == sorted(arena), arena
# quadratic growth would make the later increments per step larger
assert per_step_510 <= 1.25 * per_step_25, (per_step_25, per_step_510)
