"""Files the commands read and write: image arguments, output checks, model files.

Outputs are checked before any work (:func:`check_output`, :func:`check_model_output`)
and written atomically (:func:`sklearn_cae._utils.atomic_write`): a full disk, a
file-size limit or Ctrl-C never leaves a truncated file in place of a good one. An
output may not replace an input, nor sit inside an input folder, where the next run
would read it as data.

Models are saved and loaded through :mod:`sklearn_cae.persistence`, in the format the
extension names: ``.skops`` (loads without running code) or ``.joblib`` (a pickle).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import tempfile
from pathlib import Path

from .._utils import error_reason
from ._console import CLIError

# Settings of one run, not of the model: a saved model gets the featurizer's defaults.
_RUN_SETTINGS = {"device": "auto", "cache": None, "verbose": 0, "cae_params": None}


def image_files(arguments: list[str]) -> list[str]:
    """Expand folders to the image files under them; check that each file exists."""
    from ..datasets import find_image_files

    files = []
    for argument in arguments:
        if not argument.strip():
            raise CLIError("an image argument is an empty string")
        path = Path(argument).expanduser()
        if path.is_dir():
            found = find_image_files(path)
            if not found:
                raise CLIError(f"no image files in folder {path}")
            files.extend(found)
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
    for folder in _folders(inputs):
        if path.is_relative_to(folder):
            raise CLIError(
                f"the {what} path {output} is inside the input folder {folder}, where the "
                "next run would read it as input; write it outside the folders the command "
                "reads"
            )
    try:  # the real test of writability (os.access is wrong for root and some mounts)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to folder {path.parent}: {error_reason(exc)}") from None
    return path


def _folders(inputs: list[str]) -> list[Path]:
    """The inputs that are folders, resolved (links followed)."""
    folders = []
    for source in inputs:
        path = Path(source).expanduser()
        with contextlib.suppress(OSError):
            if path.is_dir():
                folders.append(Path(os.path.realpath(path)))
    return folders


def _same_file(a: str, b: Path) -> bool:
    """Whether two paths name one file (links and other spellings included)."""
    try:
        return os.path.samefile(Path(a).expanduser(), b)
    except (OSError, ValueError):
        return False


def check_model_output(output: str, inputs: list[str]) -> Path:
    """:func:`check_output` for a model file, whose extension names its format."""
    from ..persistence import FORMATS

    path = check_output(output, inputs, "model")
    if path.suffix.lower() not in FORMATS:
        raise CLIError(
            f"the model path {output} must end in .skops (loads without running code) or "
            ".joblib (a pickle), which name the model's format"
        )
    if path.suffix.lower() == ".skops":
        require_skops("a .skops model file")
    return path


def require_skops(what: str) -> None:
    """Fail now, not after fitting, when skops is not installed."""
    if importlib.util.find_spec("skops") is None:
        raise CLIError(f"{what} needs skops: pip install 'sklearn-cae[deploy]'")


def save_model(model, path: Path) -> None:
    """Save ``model`` (format by extension), its featurizers' run settings back to defaults."""
    from ..persistence import dump
    from ..pipelines import find_featurizers

    for featurizer, _ in find_featurizers(model):
        accepted = featurizer.get_params(deep=False)
        featurizer.set_params(**{k: v for k, v in _RUN_SETTINGS.items() if k in accepted})
    dump(model, path)


def load_model(path: str):
    """The model saved at ``path`` (.skops or .joblib); a one-line error unless it loads.

    What every command that reads a model uses. A ``.skops`` file builds only trusted
    types (see :mod:`sklearn_cae.persistence`); a file asking for another is refused
    with the type's name. The model may be a pipeline or a bare featurizer: the command
    checks that it has what it needs.
    """
    from .. import persistence

    file = Path(path).expanduser()
    if not file.is_file():
        raise CLIError(f"no such model file: {file}")
    if file.suffix.lower() == ".skops":
        require_skops(f"loading {file}")
    try:
        model = persistence.load(file)
    except persistence.UntrustedTypeError as exc:
        raise CLIError(f"refused to load {file}: {error_reason(exc)}") from None
    except Exception as exc:  # a pickle raises many types for a file that is not a model
        raise CLIError(
            f"{file} is not a model saved by 'sklearn-cae fit' ({error_reason(exc)})"
        ) from exc
    return model
