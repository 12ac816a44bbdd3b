#!/usr/bin/env python3
"""Training throughput: PyTorch against fmnist-train, in the same run.

The PyTorch baselines quoted before ("~2.2 k images/s" for the wide CNN, "11-13 k" for LeNet-BN)
were measured once, on another day, on a shared machine whose speed varies by up to 2x from one
minute to the next. This script measures PyTorch again next to our trainer, window by window, so
that the ratio means something:

    for each of --windows rounds:
        PyTorch: --steps optimizer steps of the network, once in PyTorch's default NCHW layout
            and once channels-last;
        fmnist-train bench --model M --repeats 1: the same number of steps (for the wide CNN,
            with each of its two conv2 algorithms: Winograd, the default, and im2col + GEMM)

and prints the median images/s of each and the ratios of the medians (--json for a JSON object).

The recipes are the benches': the wide CNN with Adam (lr 0.001), batch 128, dropout 0.5;
LeNet-BN with momentum SGD (lr 0.05, momentum 0.9, L2 0.001), batch 64. Both sides run the same
network, optimizer and batch on the real training images with the same number of threads;
neither side's timed steps include reading data from disk. PyTorch is not a dependency of
fmnist: install it yourself (`pip install torch`; this was written against 2.15).
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fmnist_data import fail, load_split


def network(torch, model):
    """The network and its optimizer, as fmnist-train trains them."""
    nn = torch.nn
    if model == "wide":
        # The wide CNN of issue 5: 1,630,282 parameters.
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10),
        )
        assert sum(p.numel() for p in net.parameters()) == 1_630_282
        return net, lambda ps: torch.optim.Adam(ps, lr=1e-3), 128
    # LeNet-BN: 61,750 parameters.
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    assert sum(p.numel() for p in net.parameters()) == 61_750
    return net, lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3), 64


def pytorch_windows(torch, model_name, images, labels, n, threads, steps, channels_last):
    """A closure that times one window of `steps` training steps and returns its images/s.

    `channels_last` stores activations NHWC, which oneDNN's convolutions prefer on CPU; the
    default (NCHW) is what the report's code, and most PyTorch code, runs."""
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model, optimizer, batch = network(torch, model_name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = optimizer(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    x_all = torch.frombuffer(bytearray(images), dtype=torch.uint8).view(n, 1, 28, 28)
    y_all = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(2)
    state = {"order": torch.randperm(n, generator=gen), "cursor": 0}

    def step():
        if state["cursor"] + batch > n:
            state["order"], state["cursor"] = torch.randperm(n, generator=gen), 0
        idx = state["order"][state["cursor"] : state["cursor"] + batch]
        state["cursor"] += batch
        x = x_all[idx].float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    def window():
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - t0)

    # Warm-up: one untimed window (oneDNN builds its kernels and the allocator its pools on the
    # first steps; the later windows still ran faster than the first here, so be generous).
    window()
    return window


def ours(binary, model, data, threads, steps):
    """One window of `fmnist-train bench`: (images/s, images/s of im2col + GEMM or None)."""
    cmd = [binary, "bench", "--model", model, "--threads", str(threads), "--steps", str(steps), "--repeats", "1", "--json"]
    if data:
        cmd += ["--data", data]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"{' '.join(cmd)} exited with {run.returncode}: {run.stderr.strip()}")
    try:
        out = json.loads(run.stdout)
        return out["train_images_per_second"], out.get("train_images_per_second_direct")
    except (ValueError, KeyError) as e:
        fail(f"unexpected output from {binary} bench: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fmnist-train", default=None, help="the fmnist-train binary (default: target/release/fmnist-train, else on PATH)")
    ap.add_argument("--data", default=None, help="directory of the Fashion-MNIST files (as for fmnist-train)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=["lenet", "wide"], default="wide")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per window (default: 60 for the wide CNN, 600 for LeNet-BN)")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.error = fail  # usage errors as one "error:" line, exit 2, like the Rust tools
    a = ap.parse_args()
    if a.steps is None:
        a.steps = 60 if a.model == "wide" else 600
    if a.threads < 1 or a.steps < 1 or a.windows < 1:
        fail("--threads, --steps and --windows must be at least 1")
    binary = a.fmnist_train or (
        "target/release/fmnist-train" if Path("target/release/fmnist-train").is_file() else shutil.which("fmnist-train")
    )
    if not binary or not Path(binary).is_file():
        fail("no fmnist-train binary: build it (cargo build --release) or pass --fmnist-train")
    try:
        import torch
    except ImportError:
        fail("PyTorch is not installed for this Python (pip install torch)")
    images, labels, n = load_split(a.data, "training")
    nchw = pytorch_windows(torch, a.model, images, labels, n, a.threads, a.steps, False)
    nhwc = pytorch_windows(torch, a.model, images, labels, n, a.threads, a.steps, True)
    wide = a.model == "wide"
    rows = []
    for w in range(a.windows):
        row = (nchw(), nhwc(), *ours(binary, a.model, a.data, a.threads, a.steps))
        rows.append(row)
        if not a.json:
            line = "window {}: PyTorch NCHW {:.0f}, channels-last {:.0f}; fmnist-train {:.0f}".format(w + 1, *row[:3])
            print(line + (f", im2col {row[3]:.0f}" if wide else "") + " images/s", file=sys.stderr)
    pt_nchw, pt_nhwc, mine = (statistics.median(r[i] for r in rows) for i in range(3))
    pt = max(pt_nchw, pt_nhwc)
    result = {
        "model": a.model,
        "threads": a.threads,
        "steps_per_window": a.steps,
        "windows": a.windows,
        "torch_version": torch.__version__,
        "pytorch_nchw_images_per_second": pt_nchw,
        "pytorch_channels_last_images_per_second": pt_nhwc,
        # fmnist-train's default arithmetic (for the wide CNN: Winograd).
        "images_per_second": mine,
        "over_pytorch_best": mine / pt,
        "over_pytorch_nchw": mine / pt_nchw,
    }
    names = ["pytorch_nchw", "pytorch_channels_last", "fmnist"]
    if wide:
        direct = statistics.median(r[3] for r in rows)
        result["direct_images_per_second"] = direct
        result["direct_over_pytorch_best"] = direct / pt
        names.append("direct")
    result["windows_images_per_second"] = [dict(zip(names, r)) for r in rows]
    if a.json:
        print(json.dumps(result, indent=2))
        return
    title, batch, ours_name = ("wide CNN", 128, "fmnist-train, Winograd (default)") if wide else ("LeNet-BN", 64, "fmnist-train")
    lines = [
        f"{title}, batch {batch}, {a.threads} threads, medians of {a.windows} windows of {a.steps} steps:",
        f"  PyTorch {torch.__version__}: {pt_nchw:.0f} images/s (NCHW, its default), {pt_nhwc:.0f} (channels-last)",
        f"  {ours_name}: {mine:.0f} images/s = {mine / pt:.2f}x PyTorch's faster layout, {mine / pt_nchw:.2f}x its default",
    ]
    if wide:
        lines.append(f"  fmnist-train, im2col + GEMM: {direct:.0f} images/s = {direct / pt:.2f}x PyTorch's faster layout")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
