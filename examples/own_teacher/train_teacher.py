"""A plain PyTorch training script, the kind a user already has before meeting kdedge: its own Dataset
over an image folder (Pillow), its own loop, its own evaluation. Nothing of kdedge's training is used;
the architecture comes from `kdedge.models.build_model` the way one would take a torchvision model, so
the state_dict can be loaded back by name.

    python examples/own_teacher/train_teacher.py data/fmnist64 --out teacher --epochs 8

It saves the trained teacher three ways, into --out:
    teacher_checkpoint.pt  {"epoch": ..., "state_dict": {"module." + key: tensor}} (as DataParallel saves it)
    teacher.pt2            torch.export.save of the model, dynamic batch dimension
    teacher.onnx           torch.onnx.export (dynamo), input "input" [N,3,H,W], output "logits", dynamic batch
    teacher_eval.json      test accuracy over <data>/test in eval mode, the mean/std and the classes
Inputs are normalised exactly as (uint8 / 255 - mean) / std in float32, per channel, with fixed mean/std.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kdedge.models import build_model

# Fashion-MNIST's pixel mean/std, the same in all three channels of the grey-as-RGB photos
MEAN = (0.2860, 0.2860, 0.2860)
STD = (0.3530, 0.3530, 0.3530)
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_rgb(path: Path, size: int) -> np.ndarray:
    """HWC uint8: RGB, short side resized to `size` (bilinear), centre crop. Already-square images of
    that size come back pixel for pixel."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if min(w, h) != size:
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)  # a writable copy


class FolderDataset(Dataset):
    """split_dir/<class>/<image>; classes numbered by sorted folder name (given, so test uses train's)."""

    def __init__(self, split_dir: Path, classes: list[str], size: int, train: bool):
        self.samples = [(p, label) for label, name in enumerate(classes)
                        for p in sorted((split_dir / name).iterdir()) if p.suffix.lower() in SUFFIXES]
        self.size, self.train = size, train
        self.mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        x = torch.from_numpy(load_rgb(path, self.size)).permute(2, 0, 1).float() / 255
        if self.train and torch.rand(()) < 0.5:
            x = x.flip(-1)  # clothes look the same mirrored
        return (x - self.mean) / self.std, label


def class_names(train_dir: Path) -> list[str]:
    return sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy and the logits, in eval mode."""
    model.eval()
    correct, total, logits = 0, 0, []
    for x, y in loader:
        out = model(x)
        logits.append(out)
        correct += int((out.argmax(1) == y).sum())
        total += len(y)
    return correct / total, torch.cat(logits)


def train(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        model.train()
        start, seen, total_loss = time.perf_counter(), 0, 0.0
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(y)
            seen += len(y)
        print(f"epoch {epoch}/{epochs}: loss {total_loss / seen:.4f} ({time.perf_counter() - start:.1f} s)")


def save_all(model: nn.Module, out: Path, epoch: int, example: torch.Tensor) -> None:
    model.eval()
    state = {"module." + k: v for k, v in model.state_dict().items()}  # what nn.DataParallel's state_dict has
    torch.save({"epoch": epoch, "state_dict": state}, out / "teacher_checkpoint.pt")
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, out / "teacher.pt2")
    torch.onnx.export(model, (example,), str(out / "teacher.onnx"), dynamo=True, external_data=False, verbose=False,
                      input_names=["input"], output_names=["logits"], dynamic_shapes=({0: batch},))


def check_saved(model: nn.Module, out: Path, x: torch.Tensor) -> dict[str, float]:
    """Largest |logit difference| of the .pt2 and the ONNX file against the model itself."""
    with torch.no_grad():
        ref = model.eval()(x)
        diffs = {"pt2": float((torch.export.load(out / "teacher.pt2").module()(x) - ref).abs().max())}
    try:
        import onnxruntime as ort
    except ImportError:
        return diffs
    session = ort.InferenceSession(str(out / "teacher.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"input": x.numpy()})[0]
    diffs["onnx"] = float(np.abs(onnx_logits - ref.numpy()).max())
    return diffs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="image folder with train/<class>/ and test/<class>/")
    parser.add_argument("--out", type=Path, required=True, help="folder for the saved teacher files")
    parser.add_argument("--model", default="cnn", help="architecture name (kdedge list models)")
    parser.add_argument("--model-options", default='{"channels": [32, 64, 128]}', help="its options, JSON")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    classes = class_names(args.data / "train")
    options = json.loads(args.model_options)
    model = build_model(args.model, in_channels=3, num_classes=len(classes), image_size=args.image_size, **options)
    train_set = FolderDataset(args.data / "train", classes, args.image_size, train=True)
    test_set = FolderDataset(args.data / "test", classes, args.image_size, train=False)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                              num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, batch_size=100, num_workers=args.workers)
    print(f"{len(train_set)} train / {len(test_set)} test images, {len(classes)} classes, model {args.model}")

    start = time.perf_counter()
    train(model, train_loader, args.epochs, args.lr)
    accuracy, _ = evaluate(model, test_loader)
    print(f"test accuracy {accuracy:.4f} after {args.epochs} epochs ({time.perf_counter() - start:.1f} s)")

    args.out.mkdir(parents=True, exist_ok=True)
    example = torch.stack([test_set[i][0] for i in range(min(8, len(test_set)))])
    save_all(model, args.out, args.epochs, example)
    diffs = check_saved(model, args.out, example)
    print("saved teacher_checkpoint.pt, teacher.pt2, teacher.onnx; max |logit diff| vs torch: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    result = {"test_accuracy": accuracy, "n_test": len(test_set), "epochs": args.epochs,
              "image_size": args.image_size, "mean": list(MEAN), "std": list(STD), "classes": classes,
              "model": {"name": args.model, **options}, "export_max_abs_diff": diffs}
    if not all(math.isfinite(v) for v in diffs.values()):
        raise SystemExit(f"exported teacher gives non-finite logits: {diffs}")
    (args.out / "teacher_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
