"""Files the commands read and write: image arguments, output checks, model files.

Outputs are checked before any work (:func:`check_output`) and written atomically
(:func:`sklearn_cae._utils.atomic_write`): a full disk, a file-size limit or Ctrl-C
never leaves a truncated file in place of a good one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .._utils import atomic_write, error_reason
from ._console import CLIError

# Settings of one run, not of the model: a saved model gets the featurizer's defaults.
_RUN_SETTINGS = {"device": "auto", "cache": None, "verbose": 0, "cae_params": None}


def image_files(arguments: list[str]) -> list[str]:
    """Expand folders to the image files under them; check that each file exists."""
    from ..datasets import IMAGE_EXTENSIONS

    files = []
    for argument in arguments:
        if not argument.strip():
            raise CLIError("an image argument is an empty string")
        path = Path(argument).expanduser()
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise CLIError(f"no image files in folder {path}")
            files.extend(str(p) for p in found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise CLIError(f"no such image file: {path}")
    return files


def check_output(output: str, inputs: list[str], what: str) -> Path:
    """Fail now, before any work, unless ``output`` can be written; return it resolved.

    ``inputs`` are the paths the command reads: writing over one of them is refused.
    A symbolic link is followed, so the file it points to is the one replaced.
    """
    if not output.strip():
        raise CLIError(f"the {what} path is an empty string")
    path = Path(os.path.realpath(Path(output).expanduser()))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a file as a parent folder, a name too long, ...
        raise CLIError(f"cannot write the {what} to {output}: {error_reason(exc)}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise CLIError(f"the {what} path {output} is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise CLIError(f"the {what} path {output} exists and is not a regular file")
    if not path.parent.is_dir():
        raise CLIError(f"folder {path.parent} does not exist")
    if mode is not None and any(_same_file(source, path) for source in inputs):
        raise CLIError(f"the {what} path {output} is also an input; choose another")
    try:  # the real test of writability (os.access is wrong for root and some mounts)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to folder {path.parent}: {error_reason(exc)}") from None
    return path


def _same_file(a: str, b: Path) -> bool:
    """Whether two paths name one file (links and other spellings included)."""
    try:
        return os.path.samefile(Path(a).expanduser(), b)
    except (OSError, ValueError):
        return False


def save_model(model, path: Path) -> None:
    """Write ``model`` with joblib, its featurizers' run settings back to their defaults."""
    import joblib

    from ..pipelines import find_featurizers

    for featurizer, _ in find_featurizers(model):
        accepted = featurizer.get_params(deep=False)
        featurizer.set_params(**{k: v for k, v in _RUN_SETTINGS.items() if k in accepted})
    with atomic_write(path) as file:
        joblib.dump(model, file)


def load_model(path: str):
    """The model saved at ``path``; a one-line error unless it is a fitted classifier."""
    import joblib

    file = Path(path).expanduser()
    if not file.is_file():
        raise CLIError(f"no such model file: {file}")
    try:
        model = joblib.load(file)
    except Exception as exc:  # pickle raises many types for a file that is not a model
        raise CLIError(
            f"{file} is not a model saved by 'sklearn-cae fit' ({error_reason(exc)})"
        ) from exc
    if not hasattr(model, "predict"):
        raise CLIError(f"{file} holds a {type(model).__name__}, not a fitted classifier")
    return model
