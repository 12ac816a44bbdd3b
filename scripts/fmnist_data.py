"""What the benchmark scripts share: one-line errors and the Fashion-MNIST IDX files.

The scripts import it from their own folder (`python3 scripts/bench_*.py` puts `scripts/` on
the module path)."""

import gzip
import os
import sys
import zlib
from pathlib import Path

DATA_DIRS = [os.environ.get("FMNIST_DATA"), "data/fashion-mnist", "/usr/share/datasets/fashion-mnist"]
# The files' prefix and the name errors use, per split.
SPLITS = {"training": "train", "test": "t10k"}


def fail(msg):
    """Prints one `error:` line and exits 2, like the Rust tools on bad input."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def read_idx(directory, name):
    """The bytes of `name` (or `name.gz`, decompressed) in `directory`; None if neither exists."""
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            try:
                raw = candidate.read_bytes()
                return gzip.decompress(raw) if candidate.suffix == ".gz" else raw
            except (OSError, EOFError, zlib.error) as e:
                fail(f"{candidate}: {e}")
    return None


def load_split(explicit, split):
    """(pixels, labels, count) of the `training` or `test` split, from `explicit` or the
    usual places; every failure is one `error:` line and exit 2."""
    prefix = SPLITS[split]
    dirs = [explicit] if explicit else [d for d in DATA_DIRS if d]
    for d in dirs:
        d = Path(d)
        images = read_idx(d, f"{prefix}-images-idx3-ubyte")
        labels = read_idx(d, f"{prefix}-labels-idx1-ubyte")
        if images is None or labels is None:
            continue
        n = int.from_bytes(labels[4:8], "big")
        if (
            int.from_bytes(images[:4], "big") != 0x803
            or int.from_bytes(labels[:4], "big") != 0x801
            or len(images) != 16 + n * 784
            or len(labels) != 8 + n
        ):
            fail(f"{d}: the {split} files are not Fashion-MNIST IDX files")
        return images[16:], labels[8:], n
    fail(f"no Fashion-MNIST {split} files in {', '.join(map(str, dirs))} (install dataset-fashion-mnist or pass --data)")
