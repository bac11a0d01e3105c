"""Value-set membership: ``valuesets.in_set(coding, "serum-magnesium-mass")``.

Value sets come from ``mappings/codes/`` (exact codes, prefixes, ranges and
ingredient names matched in text); the site mapping adds local codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

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


#: concept_match results kept per ValueSets (cleared when full): value sets are immutable and
#: the same codes recur in every request (conditions, medications, procedures).
MATCH_CACHE_SIZE = 16384


@dataclass(frozen=True)
class ValueSets:
    """All value sets, by id."""

    sets: dict[str, ValueSet]
    _matches: dict[tuple[Concept, tuple[str, ...]], str | None] = field(
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
