"""Build the RxNorm product -> ingredient table of clinical spec 2.1 §7.3 (service/clinical/data/rxnorm_products.json).

Usage (from the repository root, with the source checked out at the commit recorded in the provenance file):

    git clone https://github.com/cqframework/ecqm-content-qicore-2024 /tmp/ecqm
    git -C /tmp/ecqm checkout 9ebd48ffebf2ed2489f3904cc8393ebf8979bfc9
    .venv/bin/python scripts/build_rxnorm_table.py --valuesets /tmp/ecqm/input/vocabulary/valueset \
        [--check-data ../shared/data/synthea-smart-r4 examples/patients]

What it does, and nothing else:
1. Reads every FHIR ValueSet (JSON) under --valuesets: the VSAC value-set expansions that the CMS eCQMs use, published
   by cqframework (CC0). Each RxNorm code of an expansion (or of `compose.include.concept`) whose display names one or
   more §8.5 ingredients as whole words becomes a row: code -> every ingredient its display names (a combination
   product maps to all of them). Brand names in brackets ("[Zocor]") become brand rows.
2. Adds the rows of `service/clinical/data/rxnorm_supplement.csv`: product codes the value sets do not list but the
   demo patients or ../shared/data use, and brand names, each with its own citation.
3. With --check-data, reads every MedicationRequest and Medication RxNorm coding of those Bundles (gzip or JSON) and
   fails (exit 1) when a code whose display names a §8.5 ingredient, or a code listed in the supplement's misspelt
   displays, is missing from the table: the coverage rule of §7.3.
4. Writes the table (sorted, one row per code) and leaves the provenance file to be updated by hand with the source
   commit and date.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.clinical.medications import INGREDIENTS  # noqa: E402

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
DATA = ROOT / "service" / "clinical" / "data"
TABLE = DATA / "rxnorm_products.json"
SUPPLEMENT = DATA / "rxnorm_supplement.csv"
NAMES = re.compile(r"\b(" + "|".join(sorted(INGREDIENTS, key=len, reverse=True)) + r")\b", re.IGNORECASE)
BRAND = re.compile(r"\[([^\]]+)\]")


def ingredients_named(display: str) -> list[str]:
    return sorted({m.lower() for m in NAMES.findall(display)})


def rxnorm_concepts(valueset: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, display) of every RxNorm concept a ValueSet lists, in its expansion or its compose."""
    out = []
    for item in (valueset.get("expansion") or {}).get("contains") or []:
        if item.get("system") == RXNORM and item.get("code"):
            out.append((str(item["code"]), str(item.get("display") or "")))
    for include in (valueset.get("compose") or {}).get("include") or []:
        if include.get("system") == RXNORM:
            concepts = include.get("concept") or []
            out += [(str(c["code"]), str(c.get("display") or "")) for c in concepts if c.get("code")]
    return out


def valueset_concepts(folder: Path) -> Iterator[tuple[str, str]]:
    """(code, display) of every RxNorm concept of every FHIR ValueSet under `folder`, files in name order."""
    for path in sorted(folder.rglob("*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(resource, dict) and resource.get("resourceType") == "ValueSet":
            yield from rxnorm_concepts(resource)


def from_valuesets(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    products: dict[str, dict[str, Any]] = {}
    brands: dict[str, list[str]] = {}
    for code, display in valueset_concepts(folder):
        names = ingredients_named(display)
        if not names:
            continue
        products.setdefault(code, {"ingredients": names, "display": display, "source": "vsac"})
        for brand in BRAND.findall(display):
            brands.setdefault(brand.strip().lower(), names)
    return products, brands


def from_supplement() -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    products: dict[str, dict[str, Any]] = {}
    brands: dict[str, list[str]] = {}
    with SUPPLEMENT.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            names = sorted(n.strip().lower() for n in row["ingredients"].split("+"))
            unknown = [n for n in names if n not in INGREDIENTS]
            if unknown:
                raise SystemExit(f"supplement: {row['key']}: not a §8.5 ingredient: {', '.join(unknown)}")
            if row["kind"] == "product":
                products[row["key"]] = {"ingredients": names, "display": row["display"], "source": row["source"]}
            elif row["kind"] == "brand":
                brands[row["key"].lower()] = names
            else:
                raise SystemExit(f"supplement: {row['key']}: kind must be product or brand")
    return products, brands


def bundle_codings(paths: list[Path]) -> dict[str, str]:
    """RxNorm code -> display of every MedicationRequest and Medication in the Bundles under `paths`."""
    found: dict[str, str] = {}
    for base in paths:
        for path in sorted([*base.rglob("*.json"), *base.rglob("*.json.gz")]):
            raw = path.read_bytes()
            try:
                bundle = json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)
            except (OSError, ValueError):
                continue
            for entry in bundle.get("entry") or [] if isinstance(bundle, dict) else []:
                resource = entry.get("resource") or {}
                concept = resource.get("medicationCodeableConcept") or resource.get("code") or {}
                if resource.get("resourceType") not in ("MedicationRequest", "Medication"):
                    continue
                for coding in concept.get("coding") or []:
                    if coding.get("system") == RXNORM and coding.get("code"):
                        found.setdefault(str(coding["code"]), str(coding.get("display") or ""))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valuesets", type=Path, required=True, help="folder of FHIR ValueSet JSON files")
    parser.add_argument("--check-data", type=Path, nargs="*", default=[], help="Bundles whose codes must be covered")
    args = parser.parse_args(argv)
    if not args.valuesets.is_dir():
        print(f"build_rxnorm_table: no such folder {args.valuesets}", file=sys.stderr)
        return 2
    products, brands = from_valuesets(args.valuesets)
    extra_products, extra_brands = from_supplement()
    products.update(extra_products)
    brands.update(extra_brands)
    missing = []
    for code, display in sorted(bundle_codings(args.check_data).items()):
        if code not in products and ingredients_named(display):
            missing.append(f"{code} {display}")
    if missing:
        print("build_rxnorm_table: codes in the data not covered:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    table = {"products": {code: products[code] for code in sorted(products, key=int)},
             "brands": {name: brands[name] for name in sorted(brands)}}  # fmt: skip
    TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"products": len(products), "brands": len(brands)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
