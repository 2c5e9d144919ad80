"""`ckd-cds screen`: the registry equals per-patient assessment; NDJSON and Bundles agree; outputs and errors."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from service.cli import main
from service.clinical.assess import assess, assessment_to_json
from service.fhir.adapter import record_from_bundle
from service.screen import registry_row, screen

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthea-smart-r4"
AS_OF = date(2021, 4, 1)
pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared/data is not beside the checkout")


@pytest.fixture(scope="module")
def registry() -> pd.DataFrame:
    frame, _ = screen(SYNTHEA, AS_OF)
    return frame


def test_every_patient_bundle_gets_a_row(registry: pd.DataFrame) -> None:
    assert len(registry) == 263  # 265 files, two of which hold no Patient
    assert registry["patient"].is_unique


def test_rows_equal_the_single_patient_assessment(registry: pd.DataFrame) -> None:
    for path in sorted(SYNTHEA.glob("*.json.gz"))[:25]:
        bundle = json.loads(gzip.decompress(path.read_bytes()))
        patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        if len(patients) != 1:
            continue
        expected = registry_row(patients[0]["id"], assessment_to_json(assess(record_from_bundle(bundle), AS_OF)))
        row = registry[registry["patient"] == patients[0]["id"]].iloc[0].to_dict()
        assert {k: (None if pd.isna(v) else v) for k, v in row.items()} == expected


def to_ndjson(bundles: list[dict[str, object]], folder: Path) -> None:
    """Bulk Data layout: one file per resource type, one resource per line, references as Patient/{id}."""
    from service.fhir.loader import as_put_transaction

    by_type: dict[str, list[str]] = {}
    for bundle in bundles:
        for entry in as_put_transaction(bundle)["entry"]:
            resource = entry["resource"]
            by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for kind, lines in by_type.items():
        (folder / f"{kind}.ndjson").write_text("\n".join(lines) + "\n")


def test_ndjson_and_bundles_agree(tmp_path: Path) -> None:
    files = sorted(SYNTHEA.glob("[A-D]*.json.gz"))[:8]
    bundles = [json.loads(gzip.decompress(p.read_bytes())) for p in files]
    bundle_dir, ndjson_dir = tmp_path / "bundles", tmp_path / "ndjson"
    bundle_dir.mkdir()
    ndjson_dir.mkdir()
    for p in files:
        (bundle_dir / p.name).write_bytes(p.read_bytes())
    to_ndjson(bundles, ndjson_dir)
    from_bundles, _ = screen(bundle_dir, AS_OF)
    from_ndjson, _ = screen(ndjson_dir, AS_OF)
    columns = list(from_bundles.columns)
    left = from_bundles.sort_values("patient").reset_index(drop=True)
    right = from_ndjson[columns].sort_values("patient").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=False)


def test_cli_writes_registry_counts_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "registry.parquet", tmp_path / "screen.png"
    code = main(["screen", str(SYNTHEA), "--as-of", "2021-04-01", "--out", str(out), "--plot", str(png)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["patients"] == 263
    assert sum(summary["ckd_by_g_stage"].values()) == summary["ckd"]
    assert summary["patients_per_second"] > 0
    assert len(pd.read_parquet(out)) == 263
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["screen", "/nonexistent", "--as-of", "2021-04-01"],
                                  ["screen", ".", "--as-of", "2021-04-01", "--out", "x.xlsx"]])  # fmt: skip
def test_cli_bad_input_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1
