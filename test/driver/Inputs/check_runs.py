"""Check the summary of `mamlc eval --omniglot-runs`: the overall error is
the mean of the runs' printed error rates (each rounded to 0.1%, so the two
agree within 0.1%), and the accuracy is 100% less that error."""
import re
import sys

text = open(sys.argv[1]).read()
runs = [float(e) for e in re.findall(r"run\d+ +error +([0-9.]+)%", text)]
overall = re.search(r"overall error ([0-9.]+)% \(accuracy ([0-9.]+)%\)", text)
assert runs and overall, text
error, accuracy = float(overall.group(1)), float(overall.group(2))
mean = sum(runs) / len(runs)
assert abs(error - mean) <= 0.1, f"overall error {error}%, but the runs' mean is {mean:.2f}%"
assert abs(error + accuracy - 100) <= 0.1, f"error {error}% and accuracy {accuracy}%"
print(f"{len(runs)} runs: overall error is their mean ({error}%)")
