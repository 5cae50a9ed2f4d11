"""teacher.from_run: the teacher's model and training read from another run's manifest."""

from __future__ import annotations

import json

from pydantic import ValidationError

from kdedge.errors import KdedgeError
from kdedge.recipe.hashing import without_unhashed
from kdedge.recipe.messages import describe
from kdedge.recipe.schema import Recipe, TeacherConfig
from kdedge.recipe.teacher import FOREIGN_SOURCES


def teacher_from_run(recipe: Recipe, source: str) -> Recipe:
    """Fill teacher.model/train from the run named by teacher.from_run (whose teacher must be finished)."""
    root = recipe.teacher.from_run
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        theirs = manifest["recipe"]["teacher"]
        finished = manifest.get("stages", {}).get("teacher", {}).get("status") == "complete"
        if not isinstance(theirs, dict):
            raise TypeError("recipe.teacher is not a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # unreadable, or fields of the wrong type
        raise KdedgeError(f"{source}: teacher.from_run: {root} is not a kdedge run with a teacher "
                          f"(no readable {manifest_path}); train it first with `kdedge train`") from None
    if not finished:
        raise KdedgeError(f"{source}: teacher.from_run: the teacher in {root} is not finished; "
                          "finish it with `kdedge train <its recipe> --resume`")
    own = next((key for key in FOREIGN_SOURCES if theirs.get(key)), None)
    if own is not None:  # its teacher came from a file: the same file is the simpler, checked way to share it
        raise KdedgeError(f"{source}: teacher.from_run: the teacher of {root} is your own {own} file "
                          f"{theirs[own]}; give teacher.{own}: with that file here instead of from_run")
    mine = recipe.teacher
    for key in ("model", "train"):
        given = getattr(mine, key)
        if given is not None and without_unhashed(given.model_dump(mode="json")) != without_unhashed(theirs.get(key)):
            raise KdedgeError(f"{source}: teacher.{key}: differs from the teacher of {root}; "
                              f"remove teacher.{key} (it is read from that run) or drop from_run")
    try:
        teacher = TeacherConfig.model_validate({**theirs, "calibrate": mine.calibrate, "from_run": str(root)})
    except ValidationError as exc:
        raise KdedgeError(f"{manifest_path}: teacher: {describe(exc)}") from None
    return recipe.model_copy(update={"teacher": teacher})
