"""Build the RxNorm dosing product table of renal dosing spec RD-5.3 (service/clinical/data/rxnorm_dosing.json).

Usage (from the repository root, with the value sets checked out at the commit recorded in the provenance file, as for
scripts/build_rxnorm_table.py):

    .venv/bin/python scripts/build_rxnorm_dosing_table.py --valuesets /tmp/ecqm/input/vocabulary/valueset

What it does, and nothing else:
1. Reads every RxNorm concept of the FHIR ValueSets under --valuesets (the VSAC expansions the CMS eCQMs use, CC0)
   whose name names an ingredient of the drug table (config/renal_dosing.yaml, every row, enabled or not).
2. Parses each name as an RxNorm normal form (service.clinical.dosing.products.parse_normal_form): TTY (SCD, SBD,
   SCDC, pack, IN: inferred from the form of the name), each ingredient with its strength and unit, and the dose form.
   Brand names in brackets become brand rows.
3. Adds the products of service/clinical/data/rxnorm_dosing_supplement.csv (Appendix B) that the value sets do not
   list; a value-set row with the same code wins (it is the RxNorm name of that code).
4. Writes the table, sorted; the provenance file is updated by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from scripts.build_rxnorm_table import BRAND, valueset_concepts  # noqa: E402
from service.clinical.dosing.products import parse_normal_form  # noqa: E402

DATA = ROOT / "service" / "clinical" / "data"
OUT = DATA / "rxnorm_dosing.json"
SUPPLEMENT = DATA / "rxnorm_dosing_supplement.csv"
DRUG_TABLE = ROOT / "config" / "renal_dosing.yaml"


def table_ingredients() -> tuple[str, ...]:
    rows = yaml.safe_load(DRUG_TABLE.read_text(encoding="utf-8"))["drugs"].values()
    names = {i for row in rows for i in row["ingredients"]}
    return tuple(sorted(names, key=lambda n: (-len(n), n)))  # longest first


def row(product: object, source: str) -> dict[str, object]:
    p = product  # a Product
    return {"tty": p.tty, "name": p.name, "form": p.form,  # type: ignore[attr-defined]
            "ingredients": [[c.name, c.strength, c.unit] for c in p.components],  # type: ignore[attr-defined]
            "source": source}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--valuesets", type=Path, required=True, help="folder of FHIR ValueSet JSON files")
    args = parser.parse_args(argv)
    if not args.valuesets.is_dir():
        print(f"build_rxnorm_dosing_table: no such folder {args.valuesets}", file=sys.stderr)
        return 2
    ingredients = table_ingredients()
    products: dict[str, dict[str, object]] = {}
    brands: dict[str, list[str]] = {}
    for code, display in valueset_concepts(args.valuesets):
        product = parse_normal_form(code, display, ingredients)
        if product is None or code in products:
            continue
        products[code] = row(product, "vsac")
        for brand in BRAND.findall(display):
            names = [c.name for c in product.components if c.name in ingredients]
            if names:
                brands.setdefault(brand.strip().lower(), names)
    with SUPPLEMENT.open(encoding="utf-8", newline="") as handle:
        for item in csv.DictReader(line for line in handle if not line.startswith("#")):
            if item["rxcui"] in products:
                continue
            product = parse_normal_form(item["rxcui"], item["name"], ingredients)
            if product is None:
                raise SystemExit(f"supplement: {item['rxcui']}: names no drug-table ingredient")
            products[item["rxcui"]] = row(product, item["source"])
    table = {"products": {code: products[code] for code in sorted(products, key=int)},
             "brands": {name: brands[name] for name in sorted(brands)}}  # fmt: skip
    OUT.write_text(json.dumps(table, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"products": len(products), "brands": len(brands)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
