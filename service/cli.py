"""The `ckd-cds` command (clinical spec §9): egfr, kfre, assess, screen, config, serve, and dose (renal dosing spec
RD-9).

Exit status 0 with exactly one JSON object on stdout (`dose`: one JSON object per line, RD-9.3); 2 with one line on
stderr for bad arguments or input; never a traceback.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from service.clinical.assess import assess, assessment_to_json
from service.clinical.dosing import facts as dosing_facts
from service.clinical.dosing.config import dosing_table, engine_settings
from service.clinical.dosing.config import merged as merged_dosing_table
from service.clinical.dosing.engine import evaluate
from service.clinical.dosing.products import product_table
from service.clinical.equations import (
    CREATININE_UMOL_PER_MG_DL,
    EQUATIONS,
    EgfrInputs,
    MissingInput,
    Sex,
    calculate_egfr,
)
from service.clinical.kfre import MG_G_PER_MG_MMOL, ExtraLabs, Region, kfre
from service.clinical.thresholds import thresholds_to_dict
from service.config import (
    SAFETY_NOTE,
    ConfigError,
    config_version,
    load_thresholds,
    obsolete_notes,
    read_config_file,
    safety_downgrades,
)
from service.fhir.adapter import AdapterError, record_from_bundle, site_code_map
from service.fhir.orders import checked_orders, patient_facts

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or input: one line on stderr, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus a message; the contract asks for one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def positive(name: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"--{name} must be positive")
        return value

    return parse


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="ckd-cds", description="CKD detection and KDIGO decision support.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    egfr = sub.add_parser("egfr", help="compute eGFR with a named equation")
    egfr.add_argument("--equation", required=True, choices=sorted(EQUATIONS))
    egfr.add_argument("--age", required=True, type=positive("age"))
    egfr.add_argument("--sex", required=True, choices=[s.value for s in Sex])
    egfr.add_argument("--creatinine", type=positive("creatinine"))
    egfr.add_argument("--creatinine-unit", default="mg/dL", choices=["mg/dL", "umol/L"])
    egfr.add_argument("--cystatin", type=positive("cystatin"))
    egfr.add_argument("--height-cm", type=positive("height-cm"))

    k = sub.add_parser("kfre", help="kidney failure risk (Tangri)")
    k.add_argument("--variables", required=True, type=int, choices=[4, 8])
    k.add_argument("--region", required=True, choices=[r.value for r in Region])
    k.add_argument("--age", required=True, type=positive("age"))
    k.add_argument("--sex", required=True, choices=[s.value for s in Sex])
    k.add_argument("--egfr", required=True, type=positive("egfr"))
    k.add_argument("--acr", required=True, type=positive("acr"))
    k.add_argument("--acr-unit", default="mg/g", choices=["mg/g", "mg/mmol"])
    for lab in ("albumin", "phosphate", "bicarbonate", "calcium"):
        k.add_argument(f"--{lab}", type=positive(lab))

    a = sub.add_parser("assess", help="assess one patient's FHIR Bundle")
    a.add_argument("file")
    a.add_argument("--as-of", required=True)
    a.add_argument("--config")

    sc = sub.add_parser("screen", help="assess many patients: a folder of Bundles or FHIR Bulk Data NDJSON")
    sc.add_argument("source")
    sc.add_argument("--as-of", required=True)
    sc.add_argument("--config")
    sc.add_argument(
        "--out",
        default="ckd-registry.csv",
        help="registry: .parquet (a directory of Parquet parts, any size) or .csv (one file, small runs)",
    )
    sc.add_argument("--overwrite", action="store_true",
                    help="replace an existing registry at --out (whole; refused without this flag)")  # fmt: skip
    sc.add_argument("--plot", default="ckd-screen.png", help="PNG of the stage distribution and care gaps")
    sc.add_argument("--workers", type=int, default=2, help="workers of the embedded Dask LocalCluster")
    sc.add_argument("--scheduler", help="a Dask scheduler address, e.g. tcp://host:8786 (or DASK_SCHEDULER_ADDRESS)")
    sc.add_argument(
        "--stage",
        help="also keep the parsed rows, bucketed by patient, in this folder: screening the "
        "folder later skips parsing and the shuffle (re-screen with another date or configuration)",
    )

    cfg = sub.add_parser("config", help="validate or show the threshold configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=OneLineParser)
    cfg_sub.add_parser("validate").add_argument("file")
    show = cfg_sub.add_parser("show")
    show.add_argument("--config", help="a YAML file (default: the specification's defaults)")
    show.add_argument("--live", action="store_true", help="the version in force in the store (CKD_CDS_DATABASE_URL)")

    dose = sub.add_parser("dose", help="check medication orders against kidney function (renal dosing table)")
    dose.add_argument("input", help="a JSON file (facts or FHIR form; gzip accepted) or - for standard input")
    dose.add_argument("--as-of", help="overrides the input's as_of")
    dose.add_argument("--config", help="the admin YAML (thresholds and renal_dosing)")

    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--config", default=None)
    serve.add_argument("--dev", action="store_true", help="Flask development server instead of gunicorn")
    return parser


def run_egfr(args: argparse.Namespace) -> dict[str, Any]:
    scr = args.creatinine
    if scr is not None and args.creatinine_unit == "umol/L":
        scr /= CREATININE_UMOL_PER_MG_DL
    inputs = EgfrInputs(
        age=args.age, sex=Sex(args.sex), creatinine=scr, cystatin=args.cystatin, height_cm=args.height_cm
    )
    try:
        value = calculate_egfr(args.equation, inputs)
    except MissingInput as exc:
        raise UsageError(f"{args.equation}: {exc}") from None
    return {"egfr": value, "equation": args.equation, "unit": "mL/min/1.73m2"}


def run_kfre(args: argparse.Namespace) -> dict[str, Any]:
    extra = None
    if args.variables == 8:
        missing = [lab for lab in ("albumin", "phosphate", "bicarbonate", "calcium") if getattr(args, lab) is None]
        if missing:
            raise UsageError(f"--variables 8 needs --{missing[0]}")
        extra = ExtraLabs(
            albumin=args.albumin, phosphate=args.phosphate, bicarbonate=args.bicarbonate, calcium=args.calcium
        )
    acr = args.acr * MG_G_PER_MG_MMOL if args.acr_unit == "mg/mmol" else args.acr
    result = kfre(
        age=args.age, sex=Sex(args.sex), egfr=args.egfr, acr_mg_g=acr, region=Region(args.region), extra=extra
    )
    return {"risk_2y": result.risk_2y, "risk_5y": result.risk_5y, "variables": result.variables, "region": args.region}


def read_json_file(path: str) -> Any:
    """JSON, or gzip-compressed JSON (.gz), from a file; errors become one-line usage errors."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    except (ValueError, EOFError, RecursionError):  # RecursionError: nested beyond the parser's limit
        raise UsageError(f"{path} is not valid JSON") from None


def parse_as_of(text: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of must be a date YYYY-MM-DD, got {text!r}") from None


def run_assess(args: argparse.Namespace) -> dict[str, Any]:
    as_of = parse_as_of(args.as_of)
    thresholds = load_thresholds(args.config)
    record = record_from_bundle(read_json_file(args.file), site_code_map(thresholds.site_codes))
    result = assessment_to_json(assess(record, as_of, thresholds))
    result["as_of"] = args.as_of
    return result


def read_dose_input(path: str) -> Any:
    if path != "-":
        return read_json_file(path)
    try:
        raw = sys.stdin.buffer.read()
        return json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (ValueError, EOFError, OSError, RecursionError):
        raise UsageError("standard input is not valid JSON") from None


def run_dose(args: argparse.Namespace) -> list[dict[str, Any]]:
    """RD-9: the engine with order-sign semantics over the facts form or the FHIR form; one line per checked order and
    matching enabled row."""
    thresholds = load_thresholds(args.config)
    data = read_dose_input(args.input)
    if not isinstance(data, dict):
        raise UsageError("input must be a JSON object (facts: patient and orders; FHIR: bundle and draftOrders)")
    if args.as_of is not None:
        as_of = parse_as_of(args.as_of)
    elif "as_of" in data:
        try:
            as_of = dosing_facts.parse_date(data["as_of"], "as_of")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        raise UsageError("as_of is required: in the input or with --as-of")
    table, products = dosing_table(thresholds), product_table()
    try:
        if "patient" in data and "orders" in data:
            patient = dosing_facts.patient_from_facts(data["patient"], as_of)
            if not isinstance(data["orders"], list):
                raise ValueError("orders must be an array")
            orders = [dosing_facts.order_from_facts(i, o, table, products) for i, o in enumerate(data["orders"])]
        elif "bundle" in data and "draftOrders" in data:
            if not isinstance(data["draftOrders"], dict) or data["draftOrders"].get("resourceType") != "Bundle":
                raise ValueError("draftOrders must be a FHIR Bundle")
            record = record_from_bundle(data["bundle"], site_code_map(thresholds.site_codes))
            patient = patient_facts(record, as_of, thresholds.staging.akd_window)
            patient_id = next((e["resource"].get("id") for e in data["bundle"].get("entry", [])
                               if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                               and e["resource"].get("resourceType") == "Patient"), None)  # fmt: skip
            orders = checked_orders(data["draftOrders"], None, table, products, patient_id=patient_id)
        else:
            raise ValueError("input must hold patient and orders (facts form) or bundle and draftOrders (FHIR form)")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    lines = evaluate(orders, patient, table, engine_settings(thresholds), products, as_of)
    return [line.as_json() for line in lines]


def run_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.config_command == "show" and args.live:
        return live_config()
    path = args.file if args.config_command == "validate" else args.config
    thresholds = load_thresholds(path)
    if args.config_command == "validate" and (downgrades := safety_downgrades(read_config_file(path))):
        raise ConfigError(f"config {downgrades[0]}: {SAFETY_NOTE}")  # a new file is refused; a stored one loads
    if args.config_command == "validate":
        notes = obsolete_notes(read_config_file(path))
        for note in notes:
            print(f"ckd-cds: note: {note}", file=sys.stderr)
        return {"valid": True, "file": path, "version": config_version(thresholds), "obsolete": notes}
    return {"version": config_version(thresholds), "config": thresholds_to_dict(thresholds),
            "renal_dosing_table": merged_dosing_table(thresholds)}  # fmt: skip


def check_output(out: Path, overwrite: bool) -> None:
    """Issue #21 item 10: an existing registry is replaced whole, and only with --overwrite (a re-run into a .parquet
    folder kept stale parts: 8 patients reported for 3); never anything that is not a registry."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink():
        raise UsageError(f"--out {out} is a symbolic link; give the registry path itself")
    if not overwrite:
        raise UsageError(f"--out {out} exists; pass --overwrite to replace it")
    if out.suffix == ".parquet" and (not out.is_dir() or any(not p.name.endswith(".parquet") for p in out.iterdir())):
        raise UsageError(f"--out {out} is not a Parquet registry folder; not replaced")
    if out.suffix == ".csv" and not out.is_file():
        raise UsageError(f"--out {out} is not a file; not replaced")


def run_screen(args: argparse.Namespace) -> dict[str, Any]:
    from service.screen import ScreenError, plot, run

    as_of = parse_as_of(args.as_of)
    thresholds = load_thresholds(args.config)
    out, png = Path(args.out), Path(args.plot)
    if out.suffix not in (".csv", ".parquet"):
        raise UsageError("--out must end in .csv or .parquet")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    check_output(out, args.overwrite)
    try:
        source: Path | str = args.source if "://" in args.source else Path(args.source)
        counts, stats, seconds = run(source, as_of, thresholds, out, scheduler=args.scheduler,
                                     workers=args.workers, stage=Path(args.stage) if args.stage else None)  # fmt: skip
    except (ScreenError, OSError) as exc:
        raise UsageError(str(exc)) from None
    except ImportError as exc:  # issue #21: an fsspec URL whose filesystem is not installed (http:// needs aiohttp)
        raise UsageError(f"cannot read {args.source}: {exc}") from None
    except ValueError as exc:  # a URL fsspec cannot parse, a protocol it does not know
        raise UsageError(f"cannot read {args.source}: {exc}") from None
    plot(counts, png, as_of)
    rate = counts["patients"] / seconds if seconds else 0.0
    left_out = {"resources_without_patient": stats.unresolved, "patients_without_one_patient_resource":
                stats.without_patient, "invalid_lines": stats.invalid_lines}  # fmt: skip
    return {**counts, "left_out": left_out, "files": stats.files, "partitions": stats.partitions,
            "seconds": round(seconds, 2), "patients_per_second": round(rate, 1), "registry": str(out),
            "plot": str(png)}  # fmt: skip


def live_config() -> dict[str, Any]:
    import os

    from service.config_store import ConfigStore
    from service.store import DEFAULT_URL, Store

    latest = ConfigStore(Store(os.environ.get("CKD_CDS_DATABASE_URL", DEFAULT_URL))).latest()
    if latest is None:
        raise UsageError("the store holds no configuration yet (start the service once)")
    return {"version": latest.label, "author": latest.author, "comment": latest.comment, "config": latest.document}


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    from service.serve import serve

    serve(host=args.host, port=args.port, config=args.config, dev=args.dev)
    return {}


COMMANDS: dict[str, Any] = {
    "egfr": run_egfr, "kfre": run_kfre, "assess": run_assess, "config": run_config, "serve": run_serve,
    "screen": run_screen, "dose": run_dose,
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = COMMANDS[args.command](args)
    except (UsageError, ConfigError, AdapterError) as exc:
        print(f"ckd-cds: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "dose":  # RD-9.3: JSON Lines, one per checked order and row (none: no output)
        sys.stdout.write("".join(json.dumps(line) + "\n" for line in result))
    elif args.command != "serve":
        sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
