"""Names as data: ICU unit names and the words that say a specimen is not serum.

How a name matches a text (the same rule for both lists, documented in docs/mappings.md):

- case does not matter (``casefold``);
- a name written in Latin letters matches as a whole word or a sequence of whole words:
  the letters before and after it must not be Latin letters, while digits, spaces and
  punctuation may touch it. ``ICU`` matches "ICU 3 North", "综合ICU" and "ICU3" but not
  "PICU" (list ``PICU`` for that); ``MICU`` matches "MICU-2"; words of a name may be
  separated by spaces, punctuation or nothing ("step-down" = "step down" = "stepdown";
  "Intensive Care Unit (MICU)" matches "intensive care unit - MICU");
- a name with any character outside ASCII (Chinese: 重症监护, 尿) matches as a substring, after
  the ``ignore`` phrases have been removed from the text (尿素 is urea, not urine).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CACHE_SIZE = 4096
_WORD = re.compile(r"[a-z0-9]+")
_SEP = r"[\W_]*"  # spaces and punctuation between the words of a name


def _pattern(name: str) -> str | None:
    """The regex of a name in ASCII (whole words), or None for a substring name (CJK)."""
    if not name.isascii():
        return None
    words = _WORD.findall(name.casefold())
    return rf"(?<![a-z]){_SEP.join(words)}(?![a-z])" if words else None


@dataclass(frozen=True)
class NameList:
    """A list of names matched in free text by the module's rule."""

    names: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _substrings: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    # texts recur (the same code display in every result): answers kept, cleared when full
    _seen: dict[str, str | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        patterns, substrings = [], []
        for name in self.names:
            if not name.strip():
                continue
            pattern = _pattern(name)
            if pattern is None:
                substrings.append(name.strip().casefold())
            else:
                patterns.append(pattern)
        regex = re.compile("|".join(patterns)) if patterns else None
        object.__setattr__(self, "_regex", regex)
        object.__setattr__(self, "_substrings", tuple(substrings))

    def find(self, text: str | None) -> str | None:
        """The name found in ``text`` (as written in the text), or None."""
        if not text:
            return None
        try:
            return self._seen[text]
        except KeyError:
            pass
        found = self._find(text)
        if len(self._seen) >= CACHE_SIZE:
            self._seen.clear()
        self._seen[text] = found
        return found

    def _find(self, text: str) -> str | None:
        low = text.casefold()
        if self._regex is not None:
            hit = self._regex.search(low)
            if hit:
                return text[hit.start() : hit.end()] if len(low) == len(text) else hit.group(0)
        if self._substrings:
            for phrase in self.ignore:
                low = low.replace(phrase.casefold(), " ")
            for sub in self._substrings:
                if sub in low:
                    return sub
        return None

    def without(self, removed: Iterable[str]) -> tuple[str, ...]:
        """The names minus those removed (compared without case)."""
        gone = {r.strip().casefold() for r in removed}
        return tuple(n for n in self.names if n.strip().casefold() not in gone)


@dataclass(frozen=True)
class IcuNames:
    """ICU unit names (shipped, plus the site's) and the phrases that make a unit not an ICU."""

    icu: NameList = field(default_factory=NameList)
    not_icu: NameList = field(default_factory=NameList)

    def match(self, *texts: str | None) -> str | None:
        """The first text that names an ICU (and no not-ICU phrase), or None."""
        for text in texts:
            if text and self.icu.find(text) and not self.not_icu.find(text):
                return text
        return None


@dataclass(frozen=True)
class SpecimenWords:
    """Words saying a magnesium result is not serum/plasma, and the specimen-type value sets."""

    not_serum: NameList = field(default_factory=NameList)
    whole_blood: NameList = field(default_factory=NameList)
    not_serum_sets: tuple[str, ...] = ()
    whole_blood_sets: tuple[str, ...] = ()

    def find(self, texts: Iterable[str | None], *, ionized: bool) -> str | None:
        """The first text that says "not serum" (whole blood is a specimen for ionized Mg)."""
        for text in texts:
            if text and (
                self.not_serum.find(text) is not None
                or (not ionized and self.whole_blood.find(text) is not None)
            ):
                return text
        return None

    def sets(self, *, ionized: bool) -> tuple[str, ...]:
        """Specimen-type value sets that are not serum for this kind of magnesium."""
        return self.not_serum_sets if ionized else (*self.not_serum_sets, *self.whole_blood_sets)
