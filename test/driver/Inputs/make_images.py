"""Image data sets for the `task images` tests, made with Pillow and NumPy.

    make_images.py shapes OUT --layout csv|folders|two-level [--format jpg|png]
                   [--zip] [--per-class N] [--image-size S]
    make_images.py bad OUT

`shapes` draws 20 classes of coloured shapes (5 shapes x 4 colours), each
image with its own position, size, colour jitter and background noise, from
a fixed seed.  Layouts:
  csv        OUT/images/CLASS_I.EXT with OUT/train.csv (12 classes) and
             OUT/test.csv (the other 8), in the mini-ImageNet split format;
             every shape and every colour is in both splits
  folders    OUT/CLASS/I.EXT
  two-level  OUT/SHAPE/COLOUR/I.EXT (as Omniglot's alphabet/character/img)
With --zip the tree goes into OUT.zip instead.

`bad` writes the broken inputs the error tests read, under OUT/.
"""
import argparse
import io
import os
import sys
import zipfile

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "cross", "ring"]
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 220), "yellow": (230, 210, 40)}
# The held-out classes: each shape and each colour also appears in training.
TEST = {("circle", "red"), ("square", "green"), ("triangle", "blue"), ("cross", "yellow"),
        ("ring", "red"), ("circle", "blue"), ("square", "yellow"), ("triangle", "green")}


def draw(rng, shape, colour, size):
    bg = rng.integers(0, 60, size=(size, size, 3))
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    r = size * rng.uniform(0.25, 0.38)
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        w = r / 3
        d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    else:
        d.ellipse(box, outline=fill, width=max(2, int(r / 3)))
    return img


def encode(img, fmt):
    buf = io.BytesIO()
    img.save(buf, "JPEG" if fmt == "jpg" else "PNG", quality=90)
    return buf.getvalue()


def shapes(args):
    rng = np.random.default_rng(20240521)
    files = {}              # relative path -> bytes
    train, test = [], []
    for shape in SHAPES:
        for colour in COLOURS:
            label = f"{colour}-{shape}"
            for i in range(args.per_class):
                data = encode(draw(rng, shape, colour, args.image_size), args.format)
                if args.layout == "csv":
                    name = f"{label}_{i:02d}.{args.format}"
                    files[f"images/{name}"] = data
                    ((test if (shape, colour) in TEST else train)).append(f"{name},{label}")
                elif args.layout == "folders":
                    files[f"{label}/{i:02d}.{args.format}"] = data
                else:
                    files[f"{shape}/{colour}/{i:02d}.{args.format}"] = data
    if args.layout == "csv":
        files["train.csv"] = ("filename,label\n" + "\n".join(train) + "\n").encode()
        files["test.csv"] = ("filename,label\n" + "\n".join(test) + "\n").encode()
    if args.zip:
        with zipfile.ZipFile(args.out + ".zip", "w") as z:
            for name, data in sorted(files.items()):
                z.writestr(name, data)
        return
    for name, data in files.items():
        path = os.path.join(args.out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def bad(args):
    """Each case is a small data set of 6 classes of 4 images, broken once."""
    rng = np.random.default_rng(7)

    def tree(root, fmt="png"):
        files = {}
        for k, (shape, colour) in enumerate(list((s, c) for s in SHAPES for c in COLOURS)[:6]):
            for i in range(4):
                files[f"{colour}-{shape}/{i}.{fmt}"] = encode(draw(rng, shape, colour, 16), fmt)
        return files

    def write(root, files):
        for name, data in files.items():
            path = os.path.join(args.out, root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def write_zip(name, files, extra):
        with zipfile.ZipFile(os.path.join(args.out, name), "w") as z:
            for n, data in sorted(files.items()):
                z.writestr(n, data)
            for n in extra:
                z.writestr(zipfile.ZipInfo(n), files["red-circle/0.png"])

    os.makedirs(args.out, exist_ok=True)
    good = tree("good")
    write("good", good)
    # an image that is not one, and a JPEG cut short
    write("garbage", dict(good, **{"red-circle/bad.png": b"this is not an image\n"}))
    jpeg = encode(draw(rng, "square", "red", 16), "jpg")
    write("truncated", dict(good, **{"red-circle/cut.jpg": jpeg[:len(jpeg) // 2]}))
    # images more than 3 folders down
    write("deep", {f"a/b/c/{n}": d for n, d in good.items()})
    # zips with entries outside the folder they would be extracted to
    write_zip("dotdot.zip", good, ["../evil.png"])
    write_zip("absolute.zip", good, ["/tmp/evil.png"])
    # split files: a missing image, a bad header, a malformed line
    names = sorted(n for n in good)
    lines = [f"{n},{n.split('/')[0]}" for n in names]
    with open(os.path.join(args.out, "missing.csv"), "w") as f:
        f.write("filename,label\n" + "\n".join(lines[:5] + ["red-circle/nothere.png,red-circle"] + lines[5:]) + "\n")
    with open(os.path.join(args.out, "header.csv"), "w") as f:
        f.write("file,class\n" + "\n".join(lines) + "\n")
    with open(os.path.join(args.out, "malformed.csv"), "w") as f:
        f.write("filename,label\n" + lines[0] + "\nno-comma-here\n")
    with open(os.path.join(args.out, "small.csv"), "w") as f:
        f.write("filename,label\n" + "\n".join(lines[:8]) + "\n")
    with open(os.path.join(args.out, "twice.csv"), "w") as f:
        f.write("filename,label\n" + "\n".join(lines + lines[:1]) + "\n")
    # a zip of many 1-pixel images: at 4096 x 4096 x 3, 2 TB, more than any
    # machine holds (refused before decoding any)
    dot = encode(Image.new("RGB", (1, 1)), "png")
    with zipfile.ZipFile(os.path.join(args.out, "huge.zip"), "w") as z:
        for i in range(40000):
            z.writestr(f"c{i % 10}/{i}.png", dot)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shapes")
    s.add_argument("out")
    s.add_argument("--layout", choices=["csv", "folders", "two-level"], required=True)
    s.add_argument("--format", choices=["jpg", "png"], default="jpg")
    s.add_argument("--zip", action="store_true")
    s.add_argument("--per-class", type=int, default=6)
    s.add_argument("--image-size", type=int, default=32)
    b = sub.add_parser("bad")
    b.add_argument("out")
    args = p.parse_args()
    shapes(args) if args.cmd == "shapes" else bad(args)


if __name__ == "__main__":
    sys.exit(main())
