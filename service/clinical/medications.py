"""Medication classes and ingredient matching (clinical spec §7.3 and §8.5).

Order of evidence for one medication: RxNorm ingredient (TTY IN) codes, then ATC codes (exact ingredient code or class
prefix), then a case-insensitive whole-word match of ingredient names in the coding displays or text. SCD/SBD codes
are never matched as if they were ingredients; without an offline SCD->IN table they fall through to the names,
which RxNorm SCD displays always contain ("Lisinopril 10 MG Oral Tablet").
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from functools import cache
from pathlib import Path


class DrugClass(StrEnum):
    ACEI = "ACEi"
    ARB = "ARB"
    DRI = "DRI"
    ARNI = "ARNI"  # [2.1] sacubitril (always with valsartan, which counts as the ARB valsartan)
    SGLT2I = "SGLT2i"
    NS_MRA = "ns-MRA"
    STEROIDAL_MRA = "steroidal MRA"
    GLP1RA = "GLP-1 RA"
    STATIN = "statin"
    METFORMIN = "metformin"
    NSAID = "NSAID"
    LITHIUM = "lithium"


# ingredient: (class, RXCUI (TTY IN), ATC). RXCUIs: cpicpgx/cpic-schema drug.sql where marked verified in spec §8.5,
# the rest "to verify". finerenone: two conflicting candidates (2562811, 2555902) -- both accepted, name fallback kept.
# sotagliflozin and five NSAIDs have no RXCUI in the spec ("look up"): matched by ATC and name only.
INGREDIENTS: dict[str, tuple[DrugClass, tuple[str, ...], str | None]] = {
    "benazepril": (DrugClass.ACEI, ("18867",), "C09AA07"),
    "captopril": (DrugClass.ACEI, ("1998",), "C09AA01"),
    "enalapril": (DrugClass.ACEI, ("3827",), "C09AA02"),
    "fosinopril": (DrugClass.ACEI, ("50166",), "C09AA09"),
    "lisinopril": (DrugClass.ACEI, ("29046",), "C09AA03"),
    "moexipril": (DrugClass.ACEI, ("30131",), "C09AA13"),
    "perindopril": (DrugClass.ACEI, ("54552",), "C09AA04"),
    "quinapril": (DrugClass.ACEI, ("35208",), "C09AA06"),
    "ramipril": (DrugClass.ACEI, ("35296",), "C09AA05"),
    "trandolapril": (DrugClass.ACEI, ("38454",), "C09AA10"),
    "azilsartan": (DrugClass.ARB, ("1091643",), "C09CA09"),
    "candesartan": (DrugClass.ARB, ("214354",), "C09CA06"),
    "eprosartan": (DrugClass.ARB, ("83515",), "C09CA02"),
    "irbesartan": (DrugClass.ARB, ("83818",), "C09CA04"),
    "losartan": (DrugClass.ARB, ("52175",), "C09CA01"),
    "olmesartan": (DrugClass.ARB, ("321064",), "C09CA08"),
    "telmisartan": (DrugClass.ARB, ("73494",), "C09CA07"),
    "valsartan": (DrugClass.ARB, ("69749",), "C09CA03"),
    "aliskiren": (DrugClass.DRI, ("325646",), "C09XA02"),
    # [2.1] §8.5: RXCUI "look up" (to verify), not yet confirmed: matched by the combination's ATC code and by name
    "sacubitril": (DrugClass.ARNI, (), None),
    "canagliflozin": (DrugClass.SGLT2I, ("1373458",), "A10BK02"),
    "dapagliflozin": (DrugClass.SGLT2I, ("1488564",), "A10BK01"),
    "empagliflozin": (DrugClass.SGLT2I, ("1545653",), "A10BK03"),
    "ertugliflozin": (DrugClass.SGLT2I, ("1992672",), "A10BK04"),
    "sotagliflozin": (DrugClass.SGLT2I, (), "A10BK06"),
    "finerenone": (DrugClass.NS_MRA, ("2562811", "2555902"), "C03DA05"),
    "spironolactone": (DrugClass.STEROIDAL_MRA, ("9997",), "C03DA01"),
    "eplerenone": (DrugClass.STEROIDAL_MRA, ("298869",), "C03DA04"),
    "dulaglutide": (DrugClass.GLP1RA, ("1551291",), "A10BJ05"),
    "exenatide": (DrugClass.GLP1RA, ("60548",), "A10BJ01"),
    "liraglutide": (DrugClass.GLP1RA, ("475968",), "A10BJ02"),
    "lixisenatide": (DrugClass.GLP1RA, ("1440051",), "A10BJ03"),
    "semaglutide": (DrugClass.GLP1RA, ("1991302",), "A10BJ06"),
    "tirzepatide": (DrugClass.GLP1RA, ("2601723",), "A10BX16"),
    "atorvastatin": (DrugClass.STATIN, ("83367",), "C10AA05"),
    "fluvastatin": (DrugClass.STATIN, ("41127",), "C10AA04"),
    "lovastatin": (DrugClass.STATIN, ("6472",), "C10AA02"),
    "pitavastatin": (DrugClass.STATIN, ("861634",), "C10AA08"),
    "pravastatin": (DrugClass.STATIN, ("42463",), "C10AA03"),
    "rosuvastatin": (DrugClass.STATIN, ("301542",), "C10AA07"),
    "simvastatin": (DrugClass.STATIN, ("36567",), "C10AA01"),
    "metformin": (DrugClass.METFORMIN, ("6809",), "A10BA02"),
    "celecoxib": (DrugClass.NSAID, ("140587",), "M01AH01"),
    "diclofenac": (DrugClass.NSAID, ("3355",), "M01AB05"),
    "etodolac": (DrugClass.NSAID, (), "M01AB08"),
    "flurbiprofen": (DrugClass.NSAID, ("4502",), "M01AE09"),
    "ibuprofen": (DrugClass.NSAID, ("5640",), "M01AE01"),
    "indomethacin": (DrugClass.NSAID, ("5781",), "M01AB01"),
    "ketoprofen": (DrugClass.NSAID, (), "M01AE03"),
    "ketorolac": (DrugClass.NSAID, ("35827",), "M01AB15"),
    "meloxicam": (DrugClass.NSAID, ("41493",), "M01AC06"),
    "nabumetone": (DrugClass.NSAID, (), "M01AX01"),
    "naproxen": (DrugClass.NSAID, ("7258",), "M01AE02"),
    "piroxicam": (DrugClass.NSAID, (), "M01AC01"),
    "sulindac": (DrugClass.NSAID, (), "M01AB02"),
    "lithium": (DrugClass.LITHIUM, ("6448",), "N05AN01"),
}

RXCUI_TO_INGREDIENT = {rxcui: name for name, (_, rxcuis, _) in INGREDIENTS.items() for rxcui in rxcuis}
ATC_TO_INGREDIENT = {atc: name for name, (_, _, atc) in INGREDIENTS.items() if atc}
# [2.1] §8.5: ATC codes of combinations, mapped to every ingredient (C09DX04 sacubitril and valsartan; to verify).
ATC_COMBINATIONS: dict[str, tuple[str, ...]] = {"C09DX04": ("sacubitril", "valsartan")}
# §7.1 [2.1] RAS_ingredients: the RAS-blocking classes whose ingredients are counted (sacubitril never counts).
RAS_BLOCKERS = frozenset({DrugClass.ACEI, DrugClass.ARB, DrugClass.DRI})

# ATC class prefixes (spec §8.5). NSAID: M01A except M01AX (glucosamine and others; exclusion to verify), so the
# M01AX ingredient nabumetone is matched by its exact code above. Topical NSAIDs (M02A) never match.
ATC_CLASS_PREFIXES: tuple[tuple[str, DrugClass], ...] = (
    ("C09A", DrugClass.ACEI),
    ("C09B", DrugClass.ACEI),
    ("C09C", DrugClass.ARB),
    ("C09D", DrugClass.ARB),
    ("C09XA", DrugClass.DRI),
    ("A10BK", DrugClass.SGLT2I),
    ("A10BJ", DrugClass.GLP1RA),
    ("C03DA05", DrugClass.NS_MRA),
    ("C03DA01", DrugClass.STEROIDAL_MRA),
    ("C03DA04", DrugClass.STEROIDAL_MRA),
    ("C10AA", DrugClass.STATIN),
    ("C10B", DrugClass.STATIN),
    ("A10BA02", DrugClass.METFORMIN),
    ("M01A", DrugClass.NSAID),
    ("N05AN01", DrugClass.LITHIUM),
)

_NAME_PATTERN = re.compile(r"\b(" + "|".join(sorted(INGREDIENTS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
# Dose forms that make an NSAID non-systemic (spec §7.3: topical forms are excluded).
_TOPICAL = re.compile(r"\b(topical|gel|cream|ointment|patch|transdermal|ophthalmic|otic|spray)\b", re.IGNORECASE)


TABLE = Path(__file__).resolve().parent / "data" / "rxnorm_products.json"


@cache
def product_table() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """[2.1] §7.3: RxNorm product code -> ingredients, and brand name (lower case) -> ingredients, from the generated
    table (service/clinical/data/PROVENANCE.md)."""
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    products = {code: frozenset(row["ingredients"]) for code, row in data["products"].items()}
    brands = {name: frozenset(names) for name, names in data["brands"].items()}
    return products, brands


@cache
def _brand_pattern() -> re.Pattern[str] | None:
    brands = product_table()[1]
    if not brands:
        return None
    return re.compile(r"\b(" + "|".join(re.escape(b) for b in sorted(brands, key=len, reverse=True)) + r")\b", re.I)


def ingredients_from_product(code: str) -> frozenset[str]:
    """The ingredients of an RxNorm product code (SCD, SBD, SCDC, pack), or none when the table does not list it."""
    return product_table()[0].get(code, frozenset())


def class_of(ingredient: str) -> DrugClass:
    return INGREDIENTS[ingredient][0]


def classes_from_atc(code: str) -> set[DrugClass]:
    """Classes for an ATC code: the exact ingredient code first, then the class prefixes (M01AX excluded)."""
    code = code.upper().replace(" ", "")
    if code in ATC_TO_INGREDIENT:
        return {class_of(ATC_TO_INGREDIENT[code])}
    if code.startswith("M01AX"):
        return set()
    return {cls for prefix, cls in ATC_CLASS_PREFIXES if code.startswith(prefix)}


def ingredients_from_text(text: str) -> set[str]:
    """Ingredient names found as whole words in a display or text; an NSAID in a topical form is dropped."""
    found = {m.lower() for m in _NAME_PATTERN.findall(text)}
    brand = _brand_pattern()
    if brand is not None:  # [2.1] brand names through the table ("Zocor" -> simvastatin)
        for name in brand.findall(text):
            found |= product_table()[1][name.lower()]
    if _TOPICAL.search(text):
        found = {name for name in found if class_of(name) is not DrugClass.NSAID}
    return found
