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
    out, png = tmp_path / "registry.parquet", tmp_path / "screen.png"  # Parquet: a directory of parts
    code = main(["screen", str(SYNTHEA), "--as-of", "2021-04-01", "--out", str(out), "--plot", str(png)])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["patients"] == 263
    assert sum(summary["ckd_by_g_stage"].values()) == summary["ckd"]
    assert summary["patients_per_second"] > 0
    assert len(pd.read_parquet(out)) == 263
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args", [["screen", "/nonexistent", "--as-of", "2021-04-01"],
                                  ["screen", ".", "--as-of", "2021-04-01", "--out", "x.xlsx"],
                                  # issue #21: an http:// source (no filesystem installed; loopback, a closed port)
                                  ["screen", "http://127.0.0.1:9/export", "--as-of", "2021-04-01", "--out", "x.csv"],
                                  ["screen", "nosuch://x/export", "--as-of", "2021-04-01", "--out", "x.csv"],
                                  ])  # fmt: skip
def test_cli_bad_input_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- population mode on Dask (issue #16) ---------------------------------------------------------------------------


def one_process(resources: list[dict[str, object]], thresholds: object = None) -> dict[str, object]:
    """The reference: `ckd-cds assess` on one patient's resources as a Bundle, in one process."""
    from service.fhir.build import bundle as make_bundle

    patient = next(r for r in resources if r["resourceType"] == "Patient")
    return registry_row(str(patient["id"]), assessment_to_json(assess(record_from_bundle(make_bundle(resources)),
                                                                       AS_OF)))  # fmt: skip


def test_distributed_registry_equals_one_process_assess_patient_by_patient(tmp_path: Path) -> None:
    # 300 patients (263 Synthea patients and 37 renamed, date-shifted copies) as Bulk Data NDJSON, screened on a
    # LocalCluster with 2 workers, against `assess` run on each patient alone.
    from service.population.generate import patient_bundles, patient_copy, write_ndjson

    write_ndjson(SYNTHEA, tmp_path / "export", 300, compress=True)
    registry, _ = screen(tmp_path / "export", AS_OF, workers=2)
    assert len(registry) == 300
    bundles = list(patient_bundles(SYNTHEA))
    by_patient = {row["patient"]: row for row in registry.to_dict(orient="records")}
    for n in range(300):
        expected = one_process(patient_copy(bundles[n % len(bundles)], n // len(bundles)))
        got = {k: (None if pd.isna(v) else v) for k, v in by_patient[expected["patient"]].items()}
        assert got == expected


def write_lines(folder: Path, kind: str, resources: list[dict[str, object]]) -> None:
    folder.mkdir(exist_ok=True)
    with (folder / f"{kind}.ndjson").open("a", encoding="utf-8") as handle:
        for r in resources:
            handle.write(json.dumps(r) + "\n")


def small_export(folder: Path) -> None:
    """Two patients: p1 with CKD G4 (creatinine 3.0, twice) on metformin through a Medication resource, and two ACRs
    on one day (the later line counts, S11); an Observation naming no patient; a patient with no Patient resource."""
    from service.fhir import build

    write_lines(folder, "Patient", [build.patient("p1", gender="male", birth_date="1960-01-01"),
                                    build.patient("p2", gender="female", birth_date="1970-01-01")])  # fmt: skip
    obs = [build.observation("o1", "p1", "2160-0", "2020-06-01", 3.0, "mg/dL"),
           build.observation("o2", "p1", "2160-0", "2021-03-01", 3.0, "mg/dL"),
           build.observation("o3", "p1", "9318-7", "2021-03-01", 400, "mg/g"),
           build.observation("o4", "p1", "9318-7", "2021-03-01", 10, "mg/g"),
           build.observation("o5", "p2", "2160-0", "2021-03-01", 0.8, "mg/dL"),
           build.observation("o6", "p3", "2160-0", "2021-03-01", 0.8, "mg/dL")]  # fmt: skip
    orphan = build.observation("o7", "p1", "2160-0", "2021-03-02", 9.0, "mg/dL")
    orphan.pop("subject")
    write_lines(folder, "Observation", [*obs, orphan])
    write_lines(
        folder,
        "Medication",
        [
            {
                "resourceType": "Medication",
                "id": "m1",
                "code": {
                    "coding": [
                        {
                            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                            "code": "6809",
                            "display": "metformin",
                        }
                    ]
                },
            }
        ],
    )
    write_lines(folder, "MedicationRequest", [{"resourceType": "MedicationRequest", "id": "mr1", "status": "active",
                                               "intent": "order", "subject": {"reference": "Patient/p1"},
                                               "medicationReference": {"reference": "Medication/m1"}}])  # fmt: skip


def test_medications_broadcast_left_out_counted_and_order_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.population import engine

    small_export(tmp_path / "export")
    monkeypatch.setattr(engine, "BLOCK_SIZE", 300)  # many small blocks: the ACR lines land in different partitions
    code = main(["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"),
                 "--plot", str(tmp_path / "s.png")])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["patients"] == 2
    assert out["left_out"] == {"resources_without_patient": 1, "patients_without_one_patient_resource": 1,
                               "invalid_lines": 0}  # fmt: skip
    assert out["partitions"] > 4
    rows = pd.read_csv(tmp_path / "r.csv").set_index("patient")
    assert "metformin_stop" in rows.loc["p1", "recommendations"]  # through the broadcast Medication (before: lost)
    assert rows.loc["p1", "a_stage"] == "A1"  # the later of two same-day ACRs, whatever the partitioning


def test_site_codes_apply_to_screen_and_assess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.fhir import build

    config = tmp_path / "site.yaml"
    config.write_text("site_codes:\n  - {system: 'http://lab.example.org/codes', code: CREA, loinc: '2160-0'}\n")
    local = [build.observation(f"c{i}", "p1", "2160-0", day, 3.0, "mg/dL") for i, day in
             enumerate(("2020-06-01", "2021-03-01"))]  # fmt: skip
    for r in local:
        r["code"] = {"coding": [{"system": "http://lab.example.org/codes", "code": "CREA"}]}
    write_lines(tmp_path / "export", "Patient", [build.patient("p1", gender="male", birth_date="1960-01-01")])
    write_lines(tmp_path / "export", "Observation", local)
    argv = ["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"), "--plot",
            str(tmp_path / "s.png"), "--workers", "1"]  # fmt: skip
    assert main([*argv, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["ckd_by_g_stage"] == {"G4": 1}  # before: the local code was ignored
    bundle = tmp_path / "p1.json"
    bundle.write_text(json.dumps(build.bundle([build.patient("p1", gender="male", birth_date="1960-01-01"), *local])))
    assert main(["assess", str(bundle), "--as-of", "2021-04-01", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["g_stage"] == "G4"


def test_screen_runs_on_a_given_scheduler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same graph on an existing cluster: here a separately started loopback LocalCluster, by its address.
    from distributed import LocalCluster

    small_export(tmp_path / "export")
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        code = main(["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"),
                     "--plot", str(tmp_path / "s.png"), "--scheduler", cluster.scheduler_address])  # fmt: skip
        assert code == 0
        assert json.loads(capsys.readouterr().out)["patients"] == 2
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")


def test_a_stage_rescreens_without_parsing_or_shuffle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.population.generate import write_ndjson

    write_ndjson(SYNTHEA, tmp_path / "export", 60)
    first = ["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "direct.csv"),
             "--plot", str(tmp_path / "a.png"), "--stage", str(tmp_path / "stage")]  # fmt: skip
    assert main(first) == 0
    direct = json.loads(capsys.readouterr().out)
    assert (tmp_path / "stage" / "stage.json").is_file()
    again = ["screen", str(tmp_path / "stage"), "--as-of", "2021-04-01", "--out", str(tmp_path / "staged.csv"),
             "--plot", str(tmp_path / "b.png")]  # fmt: skip
    assert main(again) == 0
    staged = json.loads(capsys.readouterr().out)
    assert {k: staged[k] for k in ("patients", "ckd", "reasons", "care_gaps")} == {
        k: direct[k] for k in ("patients", "ckd", "reasons", "care_gaps")}  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "staged.csv"), pd.read_csv(tmp_path / "direct.csv"))


def test_an_fsspec_url_is_read_where_it_lies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small_export(tmp_path / "export")
    url = (tmp_path / "export").as_uri()  # file:///…: the same code path as s3:// or gs:// through fsspec
    code = main(["screen", url, "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"), "--plot",
                 str(tmp_path / "s.png"), "--workers", "1"])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 2


def test_an_existing_registry_is_replaced_whole_and_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #21 item 10: re-running into a .parquet folder kept stale parts (8 patients reported for 3)."""
    import shutil

    small_export(tmp_path / "export")
    out = tmp_path / "r.parquet"
    argv = ["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(out), "--plot",
            str(tmp_path / "s.png")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    part = next(out.glob("*.parquet"))
    shutil.copy(part, out / "part.999.parquet")  # a stale part of an earlier, larger run
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert len(pd.read_parquet(out)) == 2  # the stale part is gone with the old registry
    not_a_registry = tmp_path / "notes.parquet"
    not_a_registry.mkdir()
    (not_a_registry / "keep.txt").write_text("mine", encoding="utf-8")
    assert main([*argv[:4], "--out", str(not_a_registry), "--overwrite", "--plot", str(tmp_path / "s.png")]) == 2
    assert (not_a_registry / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_a_coding_that_is_a_number_does_not_abort_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #21 item 5: one such line aborted the whole run with no registry."""
    from service.fhir import build

    small_export(tmp_path / "export")
    bad = build.observation("bad", "p1", "2160-0", "2021-03-01", 1.0, "mg/dL")
    bad["code"]["coding"] = 5
    write_lines(tmp_path / "export", "Observation", [bad])
    code = main(["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"),
                 "--plot", str(tmp_path / "s.png")])  # fmt: skip
    assert code == 0
    assert json.loads(capsys.readouterr().out)["patients"] == 2


def tls_without_certificate(host: str, port: int) -> str:
    """A TLS client that trusts anything but has no certificate to show: "refused" or what it read."""
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"\x00" * 16)
            data = tls.recv(100)  # TLS 1.3 sends the refusal after the handshake
    except (ssl.SSLError, OSError):
        return "refused"
    return "refused" if not data else repr(data)  # EOF is a refusal too


def plain_tcp(host: str, port: int) -> str:
    import socket

    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            raw.sendall(b"plain text")
            data = raw.recv(100)
    except OSError:
        return "refused"
    return "refused" if not data else repr(data)


def test_the_embedded_cluster_accepts_no_client_without_its_credentials() -> None:
    """Issue #21 item 9: the embedded scheduler on loopback accepted any local user's code (run in the workers). It now
    speaks mutual TLS with credentials made in memory for the run: a TLS client without a certificate is refused at
    the handshake, and plain TCP is dropped. Probed with sockets, not with Dask clients (a failed Client left an event
    loop behind that broke the next cluster's start under coverage)."""
    from service.population.engine import connect

    client, close = connect(None, 1)
    try:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.run(lambda: 1)  # the run's own client works
        host, port = address.removeprefix("tls://").split(":")
        assert tls_without_certificate(host, int(port)) == "refused"
        assert plain_tcp(host, int(port)) == "refused"
    finally:
        close()


def test_export_edge_cases_are_counted_never_attributed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #21: a line that is JSON but not an object is counted as invalid; a subject that is an absolute URL (maybe
    another server's patient with the same id) is never attributed to a patient here."""
    from service.fhir import build

    small_export(tmp_path / "export")
    with (tmp_path / "export" / "Observation.ndjson").open("a", encoding="utf-8") as handle:
        handle.write("[1, 2]\n")
        foreign = build.observation("f1", "p1", "2160-0", "2021-03-20", 9.0, "mg/dL")
        foreign["subject"] = {"reference": "https://other.example/fhir/Patient/p1"}
        handle.write(json.dumps(foreign) + "\n")
    code = main(["screen", str(tmp_path / "export"), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"),
                 "--plot", str(tmp_path / "s.png")])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["left_out"]["invalid_lines"] == 1
    assert out["left_out"]["resources_without_patient"] == 2  # the orphan of small_export and the foreign one
    rows = pd.read_csv(tmp_path / "r.csv").set_index("patient")
    assert rows.loc["p1", "egfr"] < 30  # creatinine 3.0 as before: the foreign 9.0 mg/dL was not read as p1's


@pytest.mark.parametrize("rows", ["../elsewhere", "/tmp", ""])
def test_a_stage_cannot_point_outside_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str) -> None:
    stage = tmp_path / "stage"
    (stage / "rows").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (stage / "medications.json").write_text("{}", encoding="utf-8")
    (stage / "stage.json").write_text(json.dumps({"format": "ckd-cds-stage/1", "rows": rows}), encoding="utf-8")
    code = main(["screen", str(stage), "--as-of", "2021-04-01", "--out", str(tmp_path / "r.csv"), "--plot",
                 str(tmp_path / "s.png")])  # fmt: skip
    assert code == 2
    assert "inside the stage" in capsys.readouterr().err
