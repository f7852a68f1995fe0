"""Unit names of the formats, turned into Neuroglancer's SI unit and a factor.

OME-Zarr uses UDUNITS names (``micrometer``), N5 short SI symbols (``nm``,
``um``), zarr ``dimension_units`` strings like ``"4 nm"``.  Neuroglancer works
in base units ("m", "s") with a scale, e.g. ``[4e-09, "m"]``.
"""

from __future__ import annotations

import re

_PREFIXES = {
    "yocto": ("y", -24), "zepto": ("z", -21), "atto": ("a", -18), "femto": ("f", -15),
    "pico": ("p", -12), "nano": ("n", -9), "micro": ("u", -6), "milli": ("m", -3),
    "centi": ("c", -2), "deci": ("d", -1), "": ("", 0), "deca": ("da", 1), "hecto": ("h", 2),
    "kilo": ("k", 3), "mega": ("M", 6), "giga": ("G", 9), "tera": ("T", 12), "peta": ("P", 15),
    "exa": ("E", 18), "zetta": ("Z", 21), "yotta": ("Y", 24),
}

# OME (UDUNITS) names Neuroglancer accepts, -> (SI unit, factor).
OME_UNITS: dict[str, tuple[str, float]] = {
    "angstrom": ("m", 1e-10), "foot": ("m", 0.3048), "inch": ("m", 0.0254), "mile": ("m", 1609.34),
    "parsec": ("m", 3.0856775814913673e16), "yard": ("m", 0.9144),
    "minute": ("s", 60.0), "hour": ("s", 3600.0), "day": ("s", 86400.0),
}
# Short SI symbols, as N5 and Neuroglancer's own JSON write them.
SI_SYMBOLS: dict[str, tuple[str, float]] = {"": ("", 1.0)}
for _long, (_short, _exp) in _PREFIXES.items():
    for _base in ("meter", "second"):
        OME_UNITS[_long + _base] = (_base[0], 10.0**_exp)
    for _base in ("m", "s", "Hz"):
        SI_SYMBOLS[_short + _base] = (_base, 10.0**_exp)
for _base in ("m", "s", "Hz"):
    SI_SYMBOLS["µ" + _base] = (_base, 1e-6)
# Spellings seen in the wild that Neuroglancer itself would reject.
ALIASES = {"micron": "micrometer", "microns": "micrometer", "um": "micrometer", "µm": "micrometer",
           "nm": "nanometer", "mm": "millimeter"}


def ome_unit(name: str | None) -> tuple[str, float]:
    """``"micrometer"`` -> ``("m", 1e-6)``; no unit -> ``("", 1.0)``."""
    if not name:
        return "", 1.0
    if name in OME_UNITS:
        return OME_UNITS[name]
    if name in ALIASES:
        return OME_UNITS[ALIASES[name]]
    raise ValueError(f"unknown unit {name!r}")


def si_unit(name: str | None) -> tuple[str, float]:
    """N5 / Neuroglancer unit symbols (``nm``, ``um``, ``µm``) and OME names alike."""
    if name is None:
        return "", 1.0
    if name in SI_SYMBOLS:
        return SI_SYMBOLS[name]
    return ome_unit(name)


def scale_by(value: float, factor: float) -> float:
    """``value * factor`` rounded as Neuroglancer's ``scaleByExp10`` does for symbol units.

    It divides by 10**k for small factors (30 nm -> 3e-08, not 3.0000000000000004e-08);
    matching it keeps our scales equal to the ones the viewer derives.
    """
    if 0 < factor < 1:
        inverse = round(1 / factor)
        if abs(inverse * factor - 1) < 1e-12:
            return value / inverse
    return value * factor


def parse_dimension_unit(text: str | None) -> tuple[str, float]:
    """A zarr ``dimension_units`` entry like ``"4 nm"`` -> ``("m", 4e-9)``, as Neuroglancer parses it."""
    if text is None:
        return "", 1.0
    m = re.fullmatch(r"\s*([-+]?[0-9.eE+-]+)?\s*([A-Za-zµ/]*)\s*", text)
    if not m or m.group(2) not in SI_SYMBOLS:
        return "", 1.0
    unit, factor = SI_SYMBOLS[m.group(2)]
    return unit, factor * (float(m.group(1)) if m.group(1) else 1.0)


def n5_unit(name: str | None) -> tuple[str, float]:
    """A unit as Neuroglancer's N5 ``units`` accepts it (an SI symbol) and the factor to apply:
    ``"nanometer"`` -> ``("nm", 1.0)``, ``"foot"`` -> ``("m", 0.3048)``."""
    if not name:
        return "", 1.0
    if name in SI_SYMBOLS:
        return name, 1.0
    name = ALIASES.get(name, name)
    for long, (short, _exp) in _PREFIXES.items():
        for base in ("meter", "second"):
            if name == long + base:
                return short + base[0], 1.0
    if name in OME_UNITS:
        return OME_UNITS[name]
    raise ValueError(f"unknown unit {name!r}")
