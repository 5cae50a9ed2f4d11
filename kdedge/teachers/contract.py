"""A foreign teacher's input contract (recipe teacher.input) and its own input shape, checked against the
data before any work: a teacher fed other pixels than it was trained on gives quietly wrong soft targets."""

from __future__ import annotations

from typing import Sequence

from kdedge.errors import KdedgeError
from kdedge.recipe.teacher import TeacherInput

TOLERANCE = 1e-6  # mean/std are written by hand: equal to the printed digits


def check_contract(contract: TeacherInput | None, *, channels: int, image_size: tuple[int, int],
                   classes: Sequence[str], mean: Sequence[float], std: Sequence[float], source: str) -> None:
    """`source` names the recipe (the fields are teacher.input.*); data values are what the data loader made."""
    if contract is None:
        return
    field = f"{source}: teacher.input"
    h, w = image_size
    if contract.channels is not None and contract.channels != channels:
        raise KdedgeError(f"{field}.channels: the teacher takes {contract.channels} channels, the data has {channels}; "
                          "set the data's color (image_folder color: rgb|grayscale) to match the teacher")
    if contract.image_size is not None and (contract.image_size, contract.image_size) != (h, w):
        raise KdedgeError(f"{field}.image_size: the teacher takes {contract.image_size}x{contract.image_size} "
                          f"images, the data gives {h}x{w}; set data.image_size: {contract.image_size}")
    if contract.num_classes is not None and contract.num_classes != len(classes):
        raise KdedgeError(f"{field}.num_classes: the teacher has {contract.num_classes} classes, the data "
                          f"{len(classes)} ({', '.join(classes[:6])}{' …' if len(classes) > 6 else ''}); "
                          "point data.root at the dataset the teacher was trained on")
    if contract.classes is not None and list(contract.classes) != list(classes):
        diff = next((i for i, (a, b) in enumerate(zip(contract.classes, classes)) if a != b),
                    min(len(contract.classes), len(classes)))
        raise KdedgeError(f"{field}.classes: the teacher's class {diff} is "
                          f"{_at(contract.classes, diff)!r} but the data's is {_at(classes, diff)!r}; the "
                          "class folders (sorted by name) must be in the teacher's output order: rename them")
    for name, given, found in (("mean", contract.mean, mean), ("std", contract.std, std)):
        if given is not None and (len(given) != len(found)
                                  or any(abs(a - b) > TOLERANCE for a, b in zip(given, found))):
            raise KdedgeError(f"{field}.{name}: the teacher was trained with {name} {list(given)} but the data is "
                              f"normalised with {[round(v, 6) for v in found]}; set data.mean and data.std "
                              "(image_folder options) to the teacher's values")


def check_teacher_shape(shape: tuple[int | None, ...], *, channels: int, image_size: tuple[int, int],
                        path: str, field: str) -> None:
    """The input shape the teacher file declares ([N, C, H, W], None where dynamic) against the data's."""
    wanted = (channels, *image_size)
    declared = tuple(shape[1:])
    if any(d is not None and d != want for d, want in zip(declared, wanted)):
        shown = "x".join("?" if d is None else str(d) for d in declared)
        raise KdedgeError(f"{path}: teacher.{field} takes inputs of {shown} (channels x height x width), the data "
                          f"gives {channels}x{image_size[0]}x{image_size[1]}; set data.image_size (and color) to "
                          "what the teacher was trained on")


def _at(items: Sequence[str], i: int) -> str | None:
    return items[i] if i < len(items) else None
