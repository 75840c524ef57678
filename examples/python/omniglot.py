"""Omniglot for Python drivers, prepared exactly as `mamlc run` prepares it
(runtime/omniglot.c): the release's zip files read directly, each drawing
resized by area averaging with strokes 1 and background 0, and each
character rotated by 0, 90, 180 and 270 degrees as four classes.

Needs NumPy and Pillow (Debian: python3-numpy, python3-pil); Pillow only
decodes the PNGs.
"""
import io
import math
import zipfile

import numpy as np


def area_matrix(n_in, n_out):
    """A [n_out, n_in]: output pixel j averages the input pixels over
    [j s, (j + 1) s) with s = n_in / n_out, each weighted by its overlap."""
    s = n_in / n_out
    a = np.zeros((n_out, n_in))
    for j in range(n_out):
        for i in range(int(j * s), min(n_in, math.ceil((j + 1) * s))):
            a[j, i] = (min(i + 1, (j + 1) * s) - max(i, j * s)) / s
    return a


def load_image(data, size):
    """A release PNG (white background, black strokes) as a [size, size]
    float32 image with strokes 1."""
    from PIL import Image
    img = 1.0 - np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255.0
    return (area_matrix(img.shape[0], size) @ img @ area_matrix(img.shape[1], size).T).astype(np.float32)


def load_split(path, size=28):
    """{(alphabet, character): [drawings, size, size]} from a background zip
    (images_background*/ALPHABET/characterNN/*.png)."""
    chars = {}
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".png"):
                alphabet, character = name.split("/")[-3:-1]
                chars.setdefault((alphabet, character), []).append(load_image(z.read(name), size))
    return {k: np.stack(v) for k, v in chars.items()}


def held_out(chars, training):
    """chars without the alphabets that the training split also has, so
    meta-testing never sees a training alphabet."""
    seen = {alphabet for alphabet, _ in training}
    return {k: v for k, v in chars.items() if k[0] not in seen}


class Tasks:
    """Few-shot tasks: `ways` classes, `shots` + `queries` drawings of each,
    labels in a random order.  Task t of a seed comes from its own generator,
    so it does not depend on which tasks were drawn before."""

    def __init__(self, chars, ways, shots, queries, rotations=True):
        turns = range(4) if rotations else range(1)
        self.classes = [np.rot90(v, k, axes=(1, 2)) for v in chars.values() for k in turns]
        if len(self.classes) < ways:
            raise ValueError(f"{len(self.classes)} classes, fewer than the {ways} ways")
        self.ways, self.shots, self.queries = ways, shots, queries

    def task(self, seed, t):
        """(sx [ways*shots, size, size], sy int32, qx [ways*queries, ...], qy)."""
        rng = np.random.default_rng([seed, t])
        n, k, q = self.ways, self.shots, self.queries
        picked = rng.choice(len(self.classes), n, replace=False)
        labels = rng.permutation(n)
        xs, xq, ys, yq = [], [], [], []
        for cls, label in zip(picked, labels):
            draw = self.classes[cls][rng.choice(len(self.classes[cls]), k + q, replace=False)]
            xs.append(draw[:k])
            xq.append(draw[k:])
            ys += [label] * k
            yq += [label] * q
        return (np.concatenate(xs), np.array(ys, dtype=np.int32),
                np.concatenate(xq), np.array(yq, dtype=np.int32))


def load_runs(path, size=28):
    """The 20 runs of the 20-way within-alphabet one-shot benchmark
    (all_runs.zip), each as (sx, sy, qx, qy): one training image per class
    (class MM is label MM - 1) and the 20 test images with their labels."""
    runs = []
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        for r in range(1, 21):
            base = next(p for p in (f"run{r:02d}/", f"all_runs/run{r:02d}/") if p + "class_labels.txt" in names)
            root = base[:-len("runNN/")]        # the labels name files from the runs' parent
            pairs = [line.split() for line in z.read(base + "class_labels.txt").decode().splitlines() if line.strip()]
            train = sorted({cls for _, cls in pairs})
            sx = np.stack([load_image(z.read(root + c), size) for c in train])
            qx = np.stack([load_image(z.read(root + item), size) for item, _ in pairs])
            qy = np.array([train.index(cls) for _, cls in pairs], dtype=np.int32)
            runs.append((sx, np.arange(len(train), dtype=np.int32), qx, qy))
    return runs
