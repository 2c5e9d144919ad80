"""The `ckd-cds` command contract (clinical spec §9): one JSON object and exit 0, or one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "patients"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object] | None, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out else None), err


def test_egfr_prints_exactly_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["egfr", "--equation", "ckd-epi-2021-cr", "--age", "60", "--sex", "male", "--creatinine",
                          "1.4"], capsys)  # fmt: skip
    assert (code, err) == (0, "")
    assert out is not None
    assert set(out) == {"egfr", "equation", "unit"}
    assert round(float(out["egfr"]), 2) == 57.54  # type: ignore[arg-type]
    assert out["unit"] == "mL/min/1.73m2"


def test_egfr_umol_per_litre_is_divided_by_88_4(capsys: pytest.CaptureFixture[str]) -> None:
    _, mg, _ = run(["egfr", "--equation", "ckd-epi-2021-cr", "--age", "60", "--sex", "male", "--creatinine", "1.4"],
                   capsys)  # fmt: skip
    _, si, _ = run(["egfr", "--equation", "ckd-epi-2021-cr", "--age", "60", "--sex", "male", "--creatinine",
                    str(1.4 * 88.4), "--creatinine-unit", "umol/L"], capsys)  # fmt: skip
    assert mg is not None
    assert si is not None
    assert si["egfr"] == pytest.approx(mg["egfr"])


def test_kfre_contract_and_mg_mmol(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["kfre", "--variables", "4", "--region", "north-american", "--age", "55", "--sex", "male", "--egfr", "38"]
    code, out, _ = run([*base, "--acr", "150"], capsys)
    assert code == 0
    assert out is not None
    assert set(out) == {"risk_2y", "risk_5y", "variables", "region"}
    assert (out["variables"], out["region"]) == (4, "north-american")
    assert round(float(out["risk_5y"]), 4) == 0.0901  # type: ignore[arg-type]
    _, converted, _ = run([*base, "--acr", str(150 / 8.84), "--acr-unit", "mg/mmol"], capsys)
    assert converted is not None
    assert converted["risk_5y"] == pytest.approx(out["risk_5y"])


def test_kfre_8_needs_all_four_labs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["kfre", "--variables", "8", "--region", "north-american", "--age", "55", "--sex", "male",
                          "--egfr", "38", "--acr", "150", "--albumin", "4"], capsys)  # fmt: skip
    assert (code, out) == (2, None)
    assert "--phosphate" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["egfr", "--equation", "nope", "--age", "60", "--sex", "male"], "--equation"),
        (["egfr", "--equation", "ckid-u25-cr", "--age", "10", "--sex", "male", "--creatinine", "1"], "height-cm"),
        (["egfr", "--equation", "ckd-epi-2021-cr", "--age", "60", "--sex", "other", "--creatinine", "1"], "--sex"),
        (["egfr", "--equation", "ckd-epi-2021-cr", "--age", "x", "--sex", "male", "--creatinine", "1"], "--age"),
        (["egfr", "--equation", "ckd-epi-2021-cr", "--age", "60", "--sex", "male", "--creatinine", "-1"], "positive"),
        (["kfre", "--variables", "6", "--region", "north-american", "--age", "1", "--sex", "male", "--egfr", "1",
          "--acr", "1"], "--variables"),
        (["kfre", "--variables", "4", "--region", "mars", "--age", "1", "--sex", "male", "--egfr", "1", "--acr", "1"],
         "--region"),
        (["assess", "/nonexistent.json", "--as-of", "2025-01-01"], "cannot read"),
        (["assess", str(DEMO / "01-normal.json"), "--as-of", "2025-13-01"], "--as-of"),
        (["assess", str(DEMO / "NOTICE.md"), "--as-of", "2025-01-01"], "not valid JSON"),
        (["config", "validate", "/nonexistent.yaml"], "cannot read"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert (code, out) == (2, None)
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ({"resourceType": "Patient"}, "not a FHIR Bundle"),
        ({"resourceType": "Bundle", "entry": []}, "exactly one Patient"),
        ([1, 2], "not a FHIR Bundle"),
    ],
)
def test_bad_bundles_exit_2(tmp_path: Path, document: object, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(document))
    code, _, err = run(["assess", str(path), "--as-of", "2025-01-01"], capsys)
    assert code == 2
    assert needle in err


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("sglt2i:\n  min_egfr: 10\n", "sglt2i.min_egfr"),
        ("unknown_rule:\n  x: 1\n", "unknown_rule"),
        ("sglt2i:\n  typo_key: 1\n", "typo_key"),
        ("metformin:\n  reduce_below_egfr: 30\n  stop_below_egfr: 30.5\n", "metformin"),
        ("service:\n  timezone: Mars/Olympus\n", "timezone"),
        ("kfre: [1, 2\n", "YAML"),
    ],
)
def test_invalid_config_exit_2(tmp_path: Path, yaml_text: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    code, _, err = run(["assess", str(DEMO / "01-normal.json"), "--as-of", "2026-01-01", "--config", str(path)], capsys)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1


def test_config_changes_the_assessment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patient = str(DEMO / "06-nsaid-egfr-below-60.json")
    _, default, _ = run(["assess", patient, "--as-of", "2026-01-01"], capsys)
    path = tmp_path / "c.yaml"
    path.write_text("statin:\n  min_age: 40\nsglt2i:\n  low_acr_max_egfr: 60\n")
    _, tuned, _ = run(["assess", patient, "--as-of", "2026-01-01", "--config", str(path)], capsys)
    assert default is not None
    assert tuned is not None
    assert "sglt2i" not in default["recommendations"]  # type: ignore[operator]
    assert "sglt2i" in tuned["recommendations"]  # type: ignore[operator]


def test_config_validate_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["config", "validate", str(ROOT / "config" / "default.yaml")], capsys)
    assert code == 0
    assert out is not None
    assert out["valid"] is True
    _, shown, _ = run(["config", "show"], capsys)
    assert shown is not None
    assert shown["config"]["sglt2i"]["min_egfr"] == 20  # type: ignore[index]


def test_console_script_runs_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "egfr", "--equation", "ekfc-cys", "--age", "70", "--sex", "male",
         "--cystatin", "1.5"], capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0
    assert round(json.loads(result.stdout)["egfr"], 2) == 46.20
    assert result.stdout.endswith("}\n")


def test_config_show_live_reads_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.config_store import ConfigStore
    from service.store import Store

    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("CKD_CDS_DATABASE_URL", url)
    code, _, err = run(["config", "show", "--live"], capsys)
    assert (code, err.count("\n")) == (2, 1)  # nothing stored yet
    configs = ConfigStore(Store(url))
    configs.seed({"statin": {"min_age": 45}}, "seed")
    code, out, _ = run(["config", "show", "--live"], capsys)
    assert code == 0
    assert out is not None
    assert out["config"] == {"statin": {"min_age": 45}}
    assert str(out["version"]).startswith("v1-")


def test_config_validate_names_an_obsolete_key_instead_of_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("trajectory:\n  lookback_days: 1825\nsglt2i:\n  min_egfr: 25\n", encoding="utf-8")
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert code == 0
    assert out is not None
    assert out["valid"] is True
    assert out["obsolete"] == [
        "trajectory.lookback_days is obsolete and ignored: clinical spec 2.0 (S18) fixes the trend window at 3 years"
    ]
    assert err.startswith("ckd-cds: note: trajectory.lookback_days is obsolete")
    # an unknown key in the same section is still an error
    path.write_text("trajectory:\n  window_days: 10\n", encoding="utf-8")
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert (code, out) == (2, None)
    assert "'trajectory' was unexpected" in err  # the section itself no longer exists


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hyperkalaemia:\n  enabled: false\n", "hyperkalaemia.enabled"),
        ("dual_ras:\n  enabled: false\n", "dual_ras.enabled"),
        ("cards:\n  rules:\n    aki_caution:\n      enabled: false\n", "cards.rules.aki_caution.enabled"),
        ("cards:\n  rules:\n    nsaid_avoid:\n      indicator: info\n", "cards.rules.nsaid_avoid.indicator"),
    ],
)
def test_config_validate_refuses_switching_off_a_safety_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    """Clinical spec 2.1 §7.5: a new configuration that disables or downgrades a safety card is refused (exit 2)."""
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert (code, out) == (2, None)
    assert key in err
    assert "safety card" in err
    path.write_text("cards:\n  rules:\n    nsaid_avoid:\n      indicator: critical\n", encoding="utf-8")
    assert run(["config", "validate", str(path)], capsys)[0] == 0  # raising it is allowed


def test_config_validate_names_the_withdrawn_recency_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("recency:\n  max_egfr_age_days: 300\n", encoding="utf-8")
    code, out, err = run(["config", "validate", str(path)], capsys)
    assert code == 0
    assert out is not None
    assert out["obsolete"][0].startswith("recency.max_egfr_age_days is obsolete and ignored: clinical spec 2.1")
    assert "ckd-cds: note: recency.max_egfr_age_days" in err
