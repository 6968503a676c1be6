"""Reading throughput: `predict` (read_images, no CAM) vs a plain torch forward loop; Grad-CAM vs forward.

The images: ``--images`` X-ray-like 8-bit PNGs, ``--size`` pixels square (generated, not timed), read by a
resnet18 at ``--image-size`` px (random weights: speed does not depend on them) on the CPU.

Baseline: for each batch of ``--batch`` files, ``load_resized`` + the eval transform one file at a time, then
one forward pass under ``torch.inference_mode`` (what a hand-written loop does). Measured:
``read_images(model, paths, "default")`` over the same files: the same decode, plus SHA-256 of every file,
thresholding and the per-image results, with decoding overlapped with the forward passes. The order alternates
over ``--repeats`` and medians are reported.

Grad-CAM: ``GradCam.heatmaps`` on already preprocessed batches vs ``backbone(images)`` on the same batches,
seconds per image.

Usage: .venv/bin/python tests/bench/predict.py [--images 256] [--size 1024] [--image-size 224] [--batch 16]
       [--repeats 3] [--cam-images 64]
Last line: JSON {"images", "size", "image_size", "batch", "threads", "baseline_images_per_s",
"predict_images_per_s", "ratio", "forward_s_per_image", "gradcam_s_per_image", "gradcam_over_forward"}.
Targets: ratio >= 0.9; gradcam_over_forward <= 3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
from PIL import Image

from core.data.dataset import build_transforms
from core.data.images import load_resized
from core.inference.gradcam import GradCam
from core.inference.models import ReadingModel
from core.inference.reader import read_images
from core.model.backbones import build_backbone
from core.reporting import RunReport


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth anatomy-like shapes plus noise, so the PNGs compress (and decode) like radiographs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    paths = []
    for i in range(count):
        body = np.exp(-(((xx - 0.5) / 0.35) ** 2 + ((yy - 0.55) / 0.45) ** 2))
        lungs = sum(np.exp(-(((xx - c) / 0.12) ** 2 + ((yy - 0.45) / 0.22) ** 2)) for c in (0.33, 0.67))
        image = 40 + 150 * body - 70 * lungs + rng.normal(0, 6, (size, size))
        path = folder / f"xray_{i:04d}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def baseline(backbone: torch.nn.Module, paths: list[Path], image_size: int, batch: int) -> float:
    """Images per second of a plain decode-then-forward loop."""
    transform = build_transforms(image_size, train=False)
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            images = torch.stack([transform(load_resized(p, image_size)) for p in paths[i : i + batch]])
            torch.sigmoid(backbone(images).reshape(-1)).tolist()
    return len(paths) / (time.perf_counter() - started)


def measured(model: ReadingModel, paths: list[Path], batch: int) -> float:
    """Images per second of ``read_images`` (no CAM)."""
    started = time.perf_counter()
    readings = list(read_images(model, paths, "default", batch_size=batch))
    assert all(r.probability is not None for r in readings)
    return len(paths) / (time.perf_counter() - started)


def cam_cost(model: ReadingModel, paths: list[Path], image_size: int, batch: int) -> tuple[float, float]:
    """Seconds per image of a forward pass and of Grad-CAM on the same preprocessed batches."""
    transform = build_transforms(image_size, train=False)
    images = torch.stack([transform(load_resized(p, image_size)) for p in paths])
    batches = list(images.split(batch))
    explainer = GradCam(model.backbone, model.backbone_name)
    with torch.inference_mode():
        model.backbone(batches[0])  # warm-up
    explainer.heatmaps(batches[0])
    started = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            model.backbone(b)
    forward = (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    for b in batches:
        explainer.heatmaps(b)
    return forward, (time.perf_counter() - started) / len(images)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cam-images", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    model = ReadingModel(
        name="bench",
        backbone_name="resnet18",
        image_size=args.image_size,
        weights_sha256="",
        report=RunReport(),
        backbone=backbone,
    )
    with tempfile.TemporaryDirectory(prefix="pneumofl-bench-predict-") as folder:
        started = time.perf_counter()
        paths = write_images(Path(folder), args.images, args.size)
        print(f"wrote {len(paths)} PNGs of {args.size} px in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for p in paths:  # a warm page cache for both sides alike
            p.read_bytes()
        baseline(backbone, paths[: args.batch], args.image_size, args.batch)  # warm-up: allocator, kernels
        plain, ours = [], []
        for repeat in range(args.repeats):
            order = (True, False) if repeat % 2 == 0 else (False, True)
            for is_baseline in order:
                if is_baseline:
                    plain.append(baseline(backbone, paths, args.image_size, args.batch))
                else:
                    ours.append(measured(model, paths, args.batch))
            print(f"repeat {repeat + 1}: baseline {plain[-1]:.1f} img/s, predict {ours[-1]:.1f} img/s", file=sys.stderr)
        forward, cam = cam_cost(model, paths[: args.cam_images], args.image_size, args.batch)
    result = {
        "images": args.images,
        "size": args.size,
        "image_size": args.image_size,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "baseline_images_per_s": round(statistics.median(plain), 2),
        "predict_images_per_s": round(statistics.median(ours), 2),
        "ratio": round(statistics.median(ours) / statistics.median(plain), 3),
        "forward_s_per_image": round(forward, 4),
        "gradcam_s_per_image": round(cam, 4),
        "gradcam_over_forward": round(cam / forward, 2),
    }
    print(
        f"predict: {result['ratio']:.2f}x a plain forward loop; Grad-CAM {result['gradcam_over_forward']:.2f}x a forward pass"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
