"""LabelSpace: label names <-> ids, in a stable order that is saved with the model.

Knows nothing about files beyond naming them in errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import DataError


@dataclass(frozen=True)
class LabelSpace:
    """The ordered label names; a label's id is its index."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Sequence[str], given: Sequence[str] | None = None, file: str = "") -> LabelSpace:
        """Labels sorted (numerically when all are integers) or in the order given by the user."""
        seen = set(labels)
        if given:
            if len(set(given)) != len(given):
                raise DataError(file or "--labels", "--labels names a label twice")
            unknown = sorted(seen - set(given))
            if unknown:
                row = next(i for i, lab in enumerate(labels) if lab == unknown[0]) + 1
                raise DataError(file, f"label '{unknown[0]}' is not in --labels ({', '.join(given)})", row=row)
            names = tuple(given)
        else:
            ints = all(_is_int(s) for s in seen)
            names = tuple(sorted(seen, key=(lambda s: (int(s), s)) if ints else None))
        if len(names) < 2:
            raise DataError(
                file,
                f"found {len(names)} class{'es' if len(names) != 1 else ''} "
                f"({', '.join(names) or 'none'}); classification needs at least two",
            )
        return cls(names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        """As transformers' config.id2label."""
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        """As transformers' config.label2id."""
        return {n: i for i, n in enumerate(self.names)}

    def index(self, label: str) -> int | None:
        """The id of a label, or None when it is outside the space."""
        return self.label2id.get(label)

    def to_dict(self) -> dict[str, Any]:
        """What tunesmith.json stores."""
        return {"names": list(self.names)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LabelSpace:
        """Inverse of to_dict."""
        return cls(tuple(raw["names"]))


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True
