"""Unit conversion from the alias table in ``mappings/units.yaml``."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownUnit(ValueError):
    """A unit that is not among the aliases of the quantity."""


@dataclass(frozen=True)
class Quantity:
    """One physical quantity: canonical unit and factors from every known spelling."""

    name: str
    canonical: str
    factors: dict[str, float]
    preferred: dict[str, str]

    def normalise_unit(self, unit: str) -> str:
        """The preferred spelling of a unit.

        :raises UnknownUnit: the unit is not known for this quantity.
        """
        key = unit.strip()
        if key in self.preferred:
            return self.preferred[key]
        raise UnknownUnit(f"unit {unit!r} is not a known unit of {self.name}")

    def to_canonical(self, value: float, unit: str) -> float:
        """Convert a value in ``unit`` to the canonical unit.

        :raises UnknownUnit: the unit is not known for this quantity.
        """
        return value * self.factors[self.normalise_unit(unit)]

    def from_canonical(self, value: float, unit: str) -> float:
        """Convert a canonical value to ``unit``.

        :raises UnknownUnit: the unit is not known for this quantity.
        """
        return value / self.factors[self.normalise_unit(unit)]


@dataclass(frozen=True)
class Units:
    """All quantities, by name (magnesium, creatinine, albumin, weight, egfr)."""

    quantities: dict[str, Quantity]

    def __getitem__(self, name: str) -> Quantity:
        return self.quantities[name]

    def find(self, unit: str) -> Quantity | None:
        """The single quantity that knows this unit, if exactly one does."""
        found = [q for q in self.quantities.values() if unit.strip() in q.preferred]
        return found[0] if len(found) == 1 else None


def build_units(raw: dict[str, dict[str, object]]) -> Units:
    """Build the unit table from the parsed ``quantities`` mapping of units.yaml.

    :raises ValueError: a unit spelled twice with different factors.
    """
    quantities: dict[str, Quantity] = {}
    for name, spec in raw.items():
        canonical = str(spec["canonical"])
        factors: dict[str, float] = {}
        preferred: dict[str, str] = {}
        units = spec["units"]
        assert isinstance(units, dict)
        for unit, info in units.items():
            factors[unit] = float(info["factor"])
            for alias in [unit, *info.get("aliases", [])]:
                if alias in preferred and preferred[alias] != unit:
                    raise ValueError(f"{name}: unit alias {alias!r} given twice")
                preferred[alias] = unit
        if canonical not in factors:
            raise ValueError(f"{name}: canonical unit {canonical!r} has no factor")
        quantities[name] = Quantity(name, canonical, factors, preferred)
    return Units(quantities)
