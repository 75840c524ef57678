"""Check that each argument is a PNG file (its signature and an IHDR chunk) of
a sensible size: what rsvg-convert makes of an SVG it could parse."""
import struct
import sys

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", head[16:24])
    assert 200 <= width <= 4000 and 200 <= height <= 4000, (path, width, height)
    print("png ok: %dx%d" % (width, height))
