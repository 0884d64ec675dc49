"""The charset: which characters a model can emit, and their class indices.

Convention shared with :mod:`htr_ray.decode` (CTC line models): class 0 is the blank, class ``k >= 1``
is ``chars[k - 1]``. Character classifiers (no blank) use ``index(c)`` = position in ``chars``.

The charset travels inside every checkpoint (``model.json``). Fine-tuning on data with characters the
model has never seen *grows* it: :meth:`Charset.extended` appends the new characters at the end, so
every old class keeps its index and the model's output layer only gains rows
(:func:`htr_ray.models.grow_output`).
"""

from __future__ import annotations

from typing import Iterable, Sequence


class UnknownCharacter(KeyError):
    pass


class Charset:
    blank = 0

    def __init__(self, chars: str | Sequence[str]):
        seen: dict[str, int] = {}
        for c in chars:
            if c not in seen:
                seen[c] = len(seen)
        self.chars = "".join(seen) if all(len(c) == 1 for c in seen) else list(seen)
        self._index = seen

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(cls, texts: Iterable[str], whole_labels: bool = False) -> "Charset":
        """The sorted set of characters in ``texts`` (or of the whole labels, for classifiers whose
        labels are single characters anyway)."""
        found: set[str] = set()
        for t in texts:
            if whole_labels:
                found.add(t)
            else:
                found.update(t)
        return cls(sorted(found))

    def extended(self, texts: Iterable[str]) -> tuple["Charset", list[str]]:
        """A charset with the characters of ``texts`` that are missing here appended (sorted) at the
        end; returns (new charset, added characters). Old indices are unchanged."""
        missing = sorted({c for t in texts for c in t if c not in self._index})
        if not missing:
            return self, []
        return Charset(list(self) + missing), missing

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self):
        return iter(self.chars)

    def __contains__(self, c: str) -> bool:
        return c in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, Charset) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Charset({len(self)} chars)"

    @property
    def num_ctc_classes(self) -> int:
        """Output size of a CTC model: the characters plus the blank."""
        return len(self) + 1

    def index(self, c: str) -> int:
        """0-based class of a whole label (classifiers)."""
        try:
            return self._index[c]
        except KeyError:
            raise UnknownCharacter(c) from None

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """CTC targets (1-based). ``unknown``: "error" raises :class:`UnknownCharacter`, "skip" drops
        characters that are not in the charset."""
        out = []
        for c in text:
            k = self._index.get(c)
            if k is None:
                if unknown == "skip":
                    continue
                raise UnknownCharacter(c)
            out.append(k + 1)
        return out

    def decode(self, classes: Iterable[int]) -> str:
        """1-based CTC classes -> text; blanks (0) are skipped, repeats are NOT merged (see decode.py)."""
        chars = list(self.chars)
        return "".join(chars[k - 1] for k in classes if k > 0)

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> list[str]:
        return list(self.chars)

    @classmethod
    def from_json(cls, value: str | list[str]) -> "Charset":
        return cls(value)

    def as_string(self) -> str:
        """The characters as one string (what :func:`htr_ray.recognition.decode.greedy` takes)."""
        return self.chars if isinstance(self.chars, str) else "".join(self.chars)
