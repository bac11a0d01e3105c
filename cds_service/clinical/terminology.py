"""Value-set membership: ``valuesets.in_set(coding, "serum-magnesium-mass")``.

Value sets come from ``mappings/codes/`` (exact codes, prefixes, ranges and
ingredient names matched in text); the site mapping adds local codes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar

from cds_service.clinical.model import Coding, Concept

ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10"})
_NORMALISED_SYSTEMS = ICD10_SYSTEMS | {
    "http://hl7.org/fhir/sid/icd-9-cm",
    "http://www.cms.gov/Medicare/Coding/ICD10",
    "http://www.whocc.no/atc",
}


def system_key(system: str) -> str:
    """The system under which codes are indexed (both ICD-10 URIs are one system)."""
    return "icd-10" if system in ICD10_SYSTEMS else system


def code_key(system: str, code: str) -> str:
    """Normalised code for matching: ICD/ATC codes ignore dots, spaces and case."""
    if system in _NORMALISED_SYSTEMS:
        return code.replace(".", "").replace(" ", "").upper()
    return code.strip()


@dataclass(frozen=True, slots=True)
class CodeRange:
    """A prefix or an inclusive range of codes (same length) within one system."""

    system: str
    prefix: str | None = None
    low: str | None = None
    high: str | None = None

    def contains(self, key: str) -> bool:
        """Whether a normalised code falls in this range."""
        if self.prefix is not None:
            return key.startswith(self.prefix)
        assert self.low is not None and self.high is not None
        head = key[: len(self.low)]
        return len(head) == len(self.low) and self.low <= head <= self.high


@dataclass(frozen=True, slots=True)
class ValueSet:
    """One concept's codes (exact, ranges, ingredient names)."""

    id: str
    title: str
    codes: frozenset[tuple[str, str]]
    ranges: tuple[CodeRange, ...] = ()
    text_match: tuple[str, ...] = ()
    displays: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)

    def match_coding(self, coding: Coding) -> bool:
        """Whether the coding's system and code are in the set."""
        system = system_key(coding.system)
        key = code_key(coding.system, coding.code)
        if (system, key) in self.codes:
            return True
        return any(r.system == system and r.contains(key) for r in self.ranges)

    def match_text(self, text: str | None) -> bool:
        """Whether a free-text name contains one of the set's ingredient names."""
        if not text or not self.text_match:
            return False
        low = text.lower()
        return any(name in low for name in self.text_match)


@dataclass(frozen=True, slots=True)
class Membership:
    """Every value set one concept is in: by code, and by an ingredient name in its text."""

    code: frozenset[str]
    text: frozenset[str]


class _Index:
    """The value sets inverted: set ids by exact code, ranges by system, the sets with names."""

    def __init__(self, sets: dict[str, ValueSet]) -> None:
        self.codes: dict[tuple[str, str], list[str]] = {}
        self.ranges: dict[str, list[tuple[CodeRange, str]]] = {}
        self.named: list[tuple[ValueSet, str]] = []
        for set_id, vs in sets.items():
            for key in vs.codes:
                self.codes.setdefault(key, []).append(set_id)
            for r in vs.ranges:
                self.ranges.setdefault(r.system, []).append((r, set_id))
            if vs.text_match:
                self.named.append((vs, set_id))

    def membership(self, concept: Concept) -> Membership:
        """The sets whose codes or ranges hold a coding, and those whose names are in a text."""
        code: set[str] = set()
        for coding in concept.codings:
            system = system_key(coding.system)
            key = code_key(coding.system, coding.code)
            code.update(self.codes.get((system, key), ()))
            code.update(set_id for r, set_id in self.ranges.get(system, ()) if r.contains(key))
        texts = [concept.text, *(c.display for c in concept.codings)]
        text = frozenset(
            set_id for vs, set_id in self.named if any(vs.match_text(t) for t in texts)
        )
        return Membership(frozenset(code), text)


#: concept_match and membership results kept per ValueSets (each cleared when full): value
#: sets are immutable and the same codes recur in every request (conditions, medications...).
MATCH_CACHE_SIZE = 16384


@dataclass(frozen=True)
class ValueSets:
    """All value sets, by id."""

    sets: dict[str, ValueSet]
    _matches: dict[tuple[Concept, tuple[str, ...]], str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _memberships: dict[Concept, Membership] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __contains__(self, set_id: str) -> bool:
        return set_id in self.sets

    def get(self, set_id: str) -> ValueSet:
        """The value set with this id.

        :raises KeyError: unknown value set id.
        """
        return self.sets[set_id]

    def in_set(self, coding: Coding, set_id: str) -> bool:
        """Whether one coding is in the value set."""
        return self.sets[set_id].match_coding(coding)

    def concept_match(self, concept: Concept, set_ids: Iterable[str]) -> str | None:
        """How a concept matches any of the sets: ``"code"``, ``"text"`` or None.

        Codes are tried first; ingredient names in the coding displays or text
        count only when no code matched (a "text match", recorded as such).
        """
        key = (concept, tuple(set_ids))
        try:
            return self._matches[key]
        except KeyError:
            pass
        found = self._concept_match(concept, key[1])
        if len(self._matches) >= MATCH_CACHE_SIZE:
            self._matches.clear()
        self._matches[key] = found
        return found

    def membership(self, concept: Concept) -> Membership:
        """Every set the concept is in (memoised like ``concept_match``)."""
        try:
            return self._memberships[concept]
        except KeyError:
            pass
        found = self._index.membership(concept)
        if len(self._memberships) >= MATCH_CACHE_SIZE:
            self._memberships.clear()
        self._memberships[concept] = found
        return found

    @cached_property
    def _index(self) -> _Index:
        return _Index(self.sets)

    def _concept_match(self, concept: Concept, set_ids: tuple[str, ...]) -> str | None:
        sets = [self.sets[s] for s in set_ids]
        for coding in concept.codings:
            if any(vs.match_coding(coding) for vs in sets):
                return "code"
        texts = [concept.text, *(c.display for c in concept.codings)]
        for vs in sets:
            if any(vs.match_text(t) for t in texts):
                return "text"
        return None

    def classify(self, coding: Coding, set_ids: Iterable[str]) -> str | None:
        """The first set id (in the order given) that contains the coding."""
        for set_id in set_ids:
            if self.sets[set_id].match_coding(coding):
                return set_id
        return None


T = TypeVar("T")


class ItemsBySet(Generic[T]):
    """Items (conditions, orders...) indexed by the value sets their concepts are in.

    For known set ids, ``matches`` answers what ``ValueSets.concept_match`` answers
    for each item, with one membership look-up per item instead of one per question.
    """

    def __init__(self, valuesets: ValueSets, items: Iterable[tuple[T, Concept]]) -> None:
        self._items: list[tuple[T, Membership]] = []
        self._by_set: dict[str, list[int]] = {}
        for i, (item, concept) in enumerate(items):
            sets = valuesets.membership(concept)
            self._items.append((item, sets))
            for set_id in sets.code | sets.text:
                self._by_set.setdefault(set_id, []).append(i)

    def _positions(self, set_ids: Iterable[str]) -> list[int]:
        """Positions of the items in any of the sets, in order (do not modify)."""
        found = [self._by_set[set_id] for set_id in set_ids if set_id in self._by_set]
        if len(found) > 1:
            return sorted(set().union(*found))
        return found[0] if found else []

    def items_in(self, set_ids: Iterable[str]) -> list[T]:
        """The items in any of the sets, in order."""
        return [self._items[i][0] for i in self._positions(set_ids)]

    def matches(self, set_ids: Collection[str]) -> list[tuple[T, str]]:
        """The items in any of the sets, in order, with how: ``"code"``, else ``"text"``."""
        out = []
        for i in self._positions(set_ids):
            item, sets = self._items[i]
            out.append((item, "text" if sets.code.isdisjoint(set_ids) else "code"))
        return out
