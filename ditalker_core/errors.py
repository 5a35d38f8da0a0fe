"""Errors that tell the user what is missing and how to fix it."""

from __future__ import annotations

from pathlib import Path


class MissingModelError(FileNotFoundError):
    """A weight file or model folder is not where it was looked for.

    The message names the model, the exact path(s) tried, the folder to put it in and where
    to download it, so a user never has to read the code to fix it.
    """

    def __init__(self, what: str, looked_for: str | Path | list[str | Path], folder: str | Path, source: str):
        paths = looked_for if isinstance(looked_for, list) else [looked_for]
        tried = ", ".join(str(p) for p in paths)
        super().__init__(
            f"{what} not found (looked for: {tried}). Put it in {folder} ; get it from {source}"
        )
        self.what = what
        self.looked_for = [Path(p) for p in paths]
        self.folder = Path(folder)
        self.source = source


class InputError(ValueError):
    """An input has the wrong shape, length or content; the message says which input and the fix."""


class WrongWeightsError(InputError):
    """A loader was handed another kind of weights (a VAE file in the transformer loader, ...). ``kind`` and
    ``expected`` are ``checkpoints.WEIGHT_KINDS`` keys, so a front end can name its own loader for the file."""

    def __init__(self, message: str, kind: str, expected: str):
        super().__init__(message)
        self.kind, self.expected = kind, expected


class ConditionError(InputError):
    """A condition that does not fit the others (made from another audio, reference or model). ``field`` is the
    ``Conditions`` field, ``problem`` what is wrong and ``fix`` the fix in library terms, so a front end can name
    its own inputs instead (the ComfyUI nodes name the node to reconnect)."""

    def __init__(self, field: str, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.field, self.problem, self.fix = field, problem, fix
