"""Check an experiment log (mamlc run --log) and the report of the same run.

Arguments: LOG.jsonl REPORT.json MODEL.mdl ITERATIONS LOG_EVERY EVAL_EVERY.
Every line is one JSON object with an "event"; the first is the config (with
the model file's SHA-256 and every meta key), then "train" lines every
LOG_EVERY iterations and an "eval" line before training and every EVAL_EVERY
iterations, each with its confidence intervals; the report's "history" holds
the same evaluations and its "config" the same configuration."""
import hashlib
import json
import sys

log, report, model, iterations, log_every, eval_every = sys.argv[1:7]
iterations, log_every, eval_every = int(iterations), int(log_every), int(eval_every)
with open(log, encoding="utf-8") as f:
    text = f.read()
assert text.endswith("\n"), "the log ends mid-line"
lines = [json.loads(line) for line in text.splitlines()]
events = [line["event"] for line in lines]
assert events[0] == "config" and events.count("config") == 1, events
config = lines[0]
with open(model, "rb") as f:
    assert config["model_sha256"] == hashlib.sha256(f.read()).hexdigest()
for key in ("mamlc", "llvm", "command", "seed", "threads", "processes", "iterations", "eval_steps", "log_every"):
    assert key in config, key
meta = config["model"]["meta"]
for key in ("algorithm", "inner_steps", "inner_lr", "order", "meta_batch", "optimizer", "iterations"):
    assert key in meta, key
train = [line for line in lines if line["event"] == "train"]
assert [t["iteration"] for t in train] == list(range(log_every, iterations + 1, log_every)), train
assert all(t["loss"] > 0 and t["steps_per_second"] > 0 for t in train)
evals = [line for line in lines if line["event"] == "eval"]
assert [e["iteration"] for e in evals] == list(range(0, iterations + 1, eval_every)), evals
for e in evals:
    assert [p["steps"] for p in e["eval"]] == config["eval_steps"]
    assert all(p["loss"] is None or p["loss_ci95"] > 0 for p in e["eval"])  # 10 steps may diverge at first
with open(report, encoding="utf-8") as f:
    rep = json.load(f)
assert rep["eval"] == evals[-1]["eval"]
assert [{k: v for k, v in e.items() if k != "event"} for e in evals] == rep["history"]
assert rep["config"] == {k: v for k, v in config.items() if k != "event"}
print("log ok: %d lines, %d train, %d eval" % (len(lines), len(train), len(evals)))
