"""image_folder at real sizes: formats, 16-bit, aspect crop vs squash, layouts and their splits, bad data.
Oracles: Pillow's own decode/resize/crop and numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdedge.data import channel_stats, load_dataset
from kdedge.errors import KdedgeError


def tree(root: Path, spec: dict, size=(10, 6)) -> Path:
    """spec: {split or '' (flat): {class: n images}}; image i of class c has colour (c*60, i*9, 200)."""
    for split, classes in spec.items():
        for c, (cls, n) in enumerate(classes.items()):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, (c * 60, i * 9, 200)).save(folder / f"{i:03d}.png")
    return root


def pil_eval(img: Image.Image, size: int, mode="RGB", squash=False) -> np.ndarray:
    """The documented eval image by hand: convert, short side to size (long side truncated), centre crop."""
    img = img.convert(mode)
    w, h = img.size
    if squash:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    else:
        target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if target != (w, h):
            img = img.resize(target, Image.Resampling.BILINEAR)
        w, h = img.size
        left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
        img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img)
    return (a[:, :, None] if a.ndim == 2 else a).transpose(2, 0, 1)


def one_test_image(tmp_path: Path, img: Image.Image, name: str) -> Path:
    tree(tmp_path, {"train": {"a": 2}})
    (tmp_path / "test" / "a").mkdir(parents=True)
    img.save(tmp_path / "test" / "a" / name)
    return tmp_path


@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_non_square_photo_keeps_its_aspect_by_default(tmp_path, resize):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (14, 31, 3), dtype=np.uint8))
    root = one_test_image(tmp_path, photo, "wide.png")
    d = load_dataset("image_folder", [root], image_size=8, resize=resize)
    expected = pil_eval(photo, 8, squash=resize == "squash")
    assert np.array_equal(d.test.images[0].numpy(), expected)
    assert d.train_transform == "random_resized_crop" and d.hflip_ok  # flips on unless orientation_dependent


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".tif", ".gif", ".jpg", ".ppm"])
def test_common_formats_are_read(tmp_path, ext):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    root = tree(tmp_path, {"train": {"a": 2}})
    (root / "test" / "a").mkdir(parents=True)
    source = root / "test" / "a" / f"img{ext}"
    if ext == ".gif":  # two frames: the first one is the image
        img.quantize(64).save(source, save_all=True, append_images=[Image.new("P", (12, 9), 3)])
    else:
        img.save(source)
    d = load_dataset("image_folder", [root], image_size=6)
    with Image.open(source) as again:
        assert np.array_equal(d.test.images[0].numpy(), pil_eval(again, 6))


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1040).astype(np.uint16)  # 0 .. 65520
    img = Image.fromarray(wide)
    root = one_test_image(tmp_path, img, "deep.png")
    assert Image.open(root / "test" / "a" / "deep.png").mode.startswith("I")
    expected = np.rint(wide.astype(np.float64) * 255 / 65535).astype(np.uint8)
    grey = load_dataset("image_folder", [root], image_size=8, color="grayscale")
    assert grey.test.images.shape == (1, 1, 8, 8) and np.array_equal(grey.test.images[0, 0].numpy(), expected)
    rgb = load_dataset("image_folder", [root], image_size=8)
    assert all(np.array_equal(rgb.test.images[0, c].numpy(), expected) for c in range(3))
    assert any("converted 1 images to RGB (from I;16" in n for n in rgb.notes), rgb.notes
    assert len(np.unique(expected)) > 50  # the RGB conversion alone would give 0/255 only


def test_mixed_modes_converted_with_one_note_and_grayscale_has_one_channel(tmp_path):
    root = tree(tmp_path, {"train": {"a": 2}, "test": {"a": 1}})
    Image.new("L", (10, 6), 90).save(root / "train" / "a" / "grey.png")
    Image.new("RGBA", (10, 6), (1, 2, 3, 4)).save(root / "train" / "a" / "alpha.png")
    Image.new("P", (10, 6), 7).save(root / "train" / "a" / "pal.png")
    d = load_dataset("image_folder", [root], image_size=4)
    notes = [n for n in d.notes if "images to RGB" in n]
    assert len(notes) == 1 and "converted 3 images to RGB (from L: 1, P: 1, RGBA: 1)" in notes[0]
    g = load_dataset("image_folder", [root], image_size=4, color="grayscale")
    assert g.train.images.shape[1] == 1 and len(g.mean) == 1
    with Image.open(root / "test" / "a" / "000.png") as img:
        assert np.array_equal(g.test.images[0].numpy(), pil_eval(img, 4, mode="L"))


def test_non_images_are_skipped_with_a_count(tmp_path):
    root = tree(tmp_path, {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}})
    for name in ("notes.txt", ".DS_Store", "Thumbs.db"):
        (root / "train" / "a" / name).write_bytes(b"x")
    d = load_dataset("image_folder", [root], image_size=4)
    assert len(d.train) + len(d.val) == 6
    note = next(n for n in d.notes if "not images" in n)
    assert "skipped 3 file(s)" in note and ".txt x1" in note and ".DS_Store x1" in note


def _corrupt(root):
    (root / "train" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root / "train" / "a" / "bad.png", "bad_files: skip"


def _empty_file(root):
    (root / "train" / "a" / "zero.jpg").write_bytes(b"")
    return root / "train" / "a" / "zero.jpg", "0 bytes"


def _empty_class(root):
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / "readme.txt").write_text("x")
    return root / "train" / "c", "no images"


def _missing_in_test(root):
    tree(root, {"train": {"a": 1, "b": 1, "zz": 2}})
    return root / "test", "zz"


def _extra_in_test(root):
    tree(root, {"test": {"a": 1, "b": 1, "zz": 1}})
    return root / "test", "zz"


def _empty_split(root):
    (root / "val").mkdir()
    return root / "val", "no class folders"


def _test_without_train(root):
    (root / "train").rename(root / "elsewhere")
    return root, "no train/ folder"


@pytest.mark.parametrize("make", [_corrupt, _empty_file, _empty_class, _missing_in_test, _extra_in_test,
                                  _empty_split, _test_without_train])
def test_bad_data_is_one_line_naming_the_file_and_the_fix(tmp_path, make):
    root = tree(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    where, says = make(root)
    with pytest.raises(KdedgeError) as e:
        load_dataset("image_folder", [root], image_size=4)
    assert str(where) in e.value.message and says in e.value.message and "\n" not in e.value.message


def test_bad_files_skip_leaves_them_out_with_a_count(tmp_path):
    root = tree(tmp_path, {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    _corrupt(root)
    _empty_file(root)
    d = load_dataset("image_folder", [root], image_size=4, bad_files="skip")
    assert len(d.train) + len(d.val) == 5
    assert any("skipped 1 unreadable" in n and "bad.png" in n for n in d.notes), d.notes
    assert any("skipped 1 empty (0-byte)" in n for n in d.notes), d.notes


@pytest.mark.parametrize("options, says", [({"mean": [0.5], "std": [0.2]}, "data.mean: has 1 value"),
                                           ({"mean": [0.5, 0.5, 0.5]}, "data.std: missing")])
def test_mean_std_options_are_checked(tmp_path, options, says):
    root = tree(tmp_path, {"train": {"a": 2}, "test": {"a": 1}})
    with pytest.raises(KdedgeError, match=says):
        load_dataset("image_folder", [root], image_size=4, **options)


def test_mean_std_given_are_used_else_computed_on_train(tmp_path):
    root = tree(tmp_path, {"train": {"a": 4, "b": 3}, "test": {"a": 1, "b": 1}})
    d = load_dataset("image_folder", [root], image_size=4)
    mean, std = channel_stats(d.train.images)  # the train split only: val and test images never set them
    assert std[2] == 0  # tree() paints blue 200 everywhere: a constant channel gets std 1, not a division by 0
    assert np.allclose(d.mean, mean, atol=1e-9) and np.allclose(d.std, (std[0], std[1], 1.0), atol=1e-9)
    assert any("constant over the train split" in n for n in d.notes)
    given = load_dataset("image_folder", [root], image_size=4, mean=[0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0])
    assert given.mean == (0.1, 0.2, 0.3) and given.std == (1.0, 2.0, 3.0)
