"""Write a generated .mdl file for the tests of huge or deeply nested input.

usage: repeat.py OUT TEXT COUNT [TEXT COUNT ...]
Writes each TEXT COUNT times, in order, to OUT.  In TEXT, \\n is a newline,
{i} the repetition index and {i1} the index plus one.
"""
import sys

args = sys.argv[2:]
with open(sys.argv[1], "w") as out:
    for text, count in zip(args[0::2], args[1::2]):
        text = text.replace("\\n", "\n")
        if "{i" not in text:
            out.write(text * int(count))
            continue
        for i in range(int(count)):
            out.write(text.replace("{i1}", str(i + 1)).replace("{i}", str(i)))
