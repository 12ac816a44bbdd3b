#!/usr/bin/env python3
"""Inference throughput: ONNX Runtime against fmnist-infer, in the same run, one thread.

Both sides run the same LeNet-BN weights. For each of --windows rounds, in turn:

    fmnist-infer bench --model F32 --model INT8 --seconds S: batch 1, our fast f32 and int8
        kernels (the f32 logits bit-identical to the device's, which bench checks);
    ONNX Runtime, batch 1, f32: `fmnist-infer convert` of the same F32 file to ONNX, one
        `run` per image through an IOBinding (its lowest-overhead Python call);
    ONNX Runtime, batch 1, int8: ONNX Runtime's own int8 model of those f32 weights
        (`quantize_static`, QDQ, per-channel weights, its default uint8 activations for x86,
        calibrated on 1,000 training images): our int8 file is not an ONNX graph, so each side
        runs its own quantization of the same trained network;
    fmnist-infer eval --threads 1 over the 10,000 test images (batch mode), f32 and int8;
    ONNX Runtime, batch 256, f32 and int8, over the 10,000 test images;

and prints the median images/s of each and the ratios of the medians (--json for a JSON
object), with each side's test accuracy so that the models are seen to be the same.

Timed loops exclude reading files; ONNX Runtime is handed the images already as f32 / 255
(our kernels convert the bytes inside their timed loop). ONNX Runtime is not a dependency of
fmnist: install it yourself (`pip install onnxruntime numpy onnx`).
"""

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmnist_data import fail, load_split

BATCH = 256


def run_json(cmd):
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited with {run.returncode}: {run.stderr.strip()}")
    try:
        return json.loads(run.stdout)
    except ValueError as e:
        fail(f"unexpected output from {' '.join(map(str, cmd))}: {e}")


def ort_session(ort, path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_batch1(ort, np, sess, x, seconds):
    """A closure timing `seconds` of one-image runs over `x` in turn; returns images/s."""
    name = sess.get_inputs()[0].name
    buf = np.zeros((1, 1, 28, 28), dtype=np.float32)
    value = ort.OrtValue.ortvalue_from_numpy(buf)  # shares buf's memory: refill buf, run again
    binding = sess.io_binding()
    binding.bind_ortvalue_input(name, value)
    binding.bind_output(sess.get_outputs()[0].name)

    def window():
        done, i = 0, 0
        t0 = time.perf_counter()
        while True:
            for _ in range(100):
                buf[0] = x[i]
                sess.run_with_iobinding(binding)
                i = (i + 1) % len(x)
            done += 100
            t = time.perf_counter() - t0
            if t >= seconds:
                return done / t

    window()  # warm-up
    return window


def ort_batched(np, sess, x):
    """A closure timing one pass over `x` in batches of BATCH; returns (images/s, argmax)."""
    name = sess.get_inputs()[0].name

    def window():
        preds = []
        t0 = time.perf_counter()
        for s in range(0, len(x), BATCH):
            preds.append(sess.run(None, {name: x[s : s + BATCH]})[0].argmax(axis=1))
        return len(x) / (time.perf_counter() - t0), np.concatenate(preds)

    window()  # warm-up
    return window


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--f32", required=True, help="LeNet-BN f32 model file (FMNM, as trained or BN-folded)")
    ap.add_argument("--int8", required=True, help="our int8 model file of the same network (fmnist-train export)")
    ap.add_argument("--fmnist-infer", default=None, help="the fmnist-infer binary (default: target/release/fmnist-infer, else on PATH)")
    ap.add_argument("--data", default=None, help="directory of the Fashion-MNIST files")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per batch-1 window and kernel")
    ap.add_argument("--json", action="store_true")
    ap.error = fail  # usage errors as one "error:" line, exit 2, like the Rust tools
    a = ap.parse_args()
    if a.windows < 1 or not (0 < a.seconds <= 60):
        fail("--windows must be at least 1 and --seconds in (0, 60]")
    for p in (a.f32, a.int8):
        if not Path(p).is_file():
            fail(f"{p}: no such file")
    binary = a.fmnist_infer or (
        "target/release/fmnist-infer" if Path("target/release/fmnist-infer").is_file() else shutil.which("fmnist-infer")
    )
    if not binary or not Path(binary).is_file():
        fail("no fmnist-infer binary: build it (cargo build --release) or pass --fmnist-infer")
    try:
        import numpy as np
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as e:
        fail(f"ONNX Runtime is not installed for this Python ({e.name}; pip install onnxruntime numpy onnx)")

    test_images, test_labels, n = load_split(a.data, "test")
    train_images, _, _ = load_split(a.data, "training")
    x = np.frombuffer(test_images, dtype=np.uint8).reshape(n, 1, 28, 28).astype(np.float32) / np.float32(255)
    y = np.frombuffer(test_labels, dtype=np.uint8)
    calib = np.frombuffer(train_images[: 1000 * 784], dtype=np.uint8).reshape(1000, 1, 28, 28)
    calib = calib.astype(np.float32) / np.float32(255)

    tmp = Path(tempfile.mkdtemp(prefix="fmnist-ort-"))
    try:
        f32_onnx, int8_onnx = tmp / "f32.onnx", tmp / "int8.onnx"
        conv = subprocess.run([binary, "convert", "--model", a.f32, "--out", str(f32_onnx)], capture_output=True, text=True)
        if conv.returncode != 0:
            fail(f"{binary} convert: {conv.stderr.strip()}")

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(calib[i : i + 1] for i in range(len(calib)))

            def get_next(self):
                b = next(self.it, None)
                return None if b is None else {"input": b}

        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process: not needed for this graph
        quantize_static(
            str(f32_onnx), str(int8_onnx), Reader(), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
        sessions = {k: ort_session(ort, p) for k, p in (("f32", f32_onnx), ("int8", int8_onnx))}
        b1 = {k: ort_batch1(ort, np, s, x, a.seconds) for k, s in sessions.items()}
        bn = {k: ort_batched(np, s, x) for k, s in sessions.items()}

        def ours_eval(model):
            r = run_json([binary, "eval", "--model", model, "--threads", "1", "--json"] + (["--data", a.data] if a.data else []))
            return r["images_per_second"], r["accuracy"]

        rows = []
        for w in range(a.windows):
            bench = run_json(
                [binary, "bench", "--model", a.f32, "--model", a.int8, "--seconds", str(2 * a.seconds), "--json"]
                + (["--data", a.data] if a.data else [])
            )
            ours_b1 = [m["fast"]["images_per_second"] for m in bench["results"]]
            if not all(m["bit_identical"] for m in bench["results"]):
                fail("fmnist-infer bench: the fast kernels' logits differ from the reference")
            row = {"ours_f32_b1": ours_b1[0], "ours_int8_b1": ours_b1[1]}
            row["ort_f32_b1"], row["ort_int8_b1"] = b1["f32"](), b1["int8"]()
            (row["ours_f32_batch"], ours_f32_acc), (row["ours_int8_batch"], ours_int8_acc) = ours_eval(a.f32), ours_eval(a.int8)
            (row["ort_f32_b256"], p32), (row["ort_int8_b256"], p8) = bn["f32"](), bn["int8"]()
            rows.append(row)
            if not a.json:
                print(f"window {w + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items()) + " images/s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "windows": a.windows,
        "seconds_per_window": a.seconds,
        "onnxruntime_version": ort.__version__,
        "threads": 1,
        "median_images_per_second": med,
        "f32_batch1_ratio": med["ours_f32_b1"] / med["ort_f32_b1"],
        "int8_batch1_ratio": med["ours_int8_b1"] / med["ort_int8_b1"],
        "f32_batch_ratio": med["ours_f32_batch"] / med["ort_f32_b256"],
        "int8_batch_ratio": med["ours_int8_batch"] / med["ort_int8_b256"],
        "accuracy": {
            "ours_f32": ours_f32_acc,
            "ours_int8": ours_int8_acc,
            "ort_f32": float((p32 == y).mean()),
            "ort_int8": float((p8 == y).mean()),
        },
        "windows_images_per_second": rows,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    acc = result["accuracy"]
    print(
        "\n".join(
            [
                f"LeNet-BN, one thread, medians of {a.windows} windows; ONNX Runtime {ort.__version__}:",
                f"  f32  batch 1:   fmnist {med['ours_f32_b1']:.0f} images/s, ONNX Runtime {med['ort_f32_b1']:.0f}: {result['f32_batch1_ratio']:.2f}x",
                f"  int8 batch 1:   fmnist {med['ours_int8_b1']:.0f} images/s, ONNX Runtime {med['ort_int8_b1']:.0f}: {result['int8_batch1_ratio']:.2f}x",
                f"  f32  batch:     fmnist eval {med['ours_f32_batch']:.0f} images/s, ONNX Runtime batch {BATCH} {med['ort_f32_b256']:.0f}: {result['f32_batch_ratio']:.2f}x",
                f"  int8 batch:     fmnist eval {med['ours_int8_batch']:.0f} images/s, ONNX Runtime batch {BATCH} {med['ort_int8_b256']:.0f}: {result['int8_batch_ratio']:.2f}x",
                f"  test accuracy:  fmnist f32 {100 * acc['ours_f32']:.2f} %, int8 {100 * acc['ours_int8']:.2f} %; "
                f"ONNX Runtime f32 {100 * acc['ort_f32']:.2f} %, int8 {100 * acc['ort_int8']:.2f} %",
            ]
        )
    )


if __name__ == "__main__":
    main()
