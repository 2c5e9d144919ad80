"""Train and validate the 5-year all-cause mortality model on the flchain cohort (issue #7).

    python models/mortality_flchain/1/train.py [--out DIR]

Writes model.json (coefficients only, no pickle), metrics.json and training_manifest.json next to this script (or
to --out). Deterministic: a fixed seed, and coefficients rounded to 6 significant digits so that `make train`
reproduces model.json exactly on any machine with the pinned library ranges.

Outcome: death within 5 years (1,826 days) of the blood draw. People censored alive before 5 years have unknown
5-year status and are excluded (counted in metrics.json). Predictors: age, sex and CKD-EPI 2021 creatinine eGFR
(Inker, NEJM 2021) as a piecewise-linear term with a knot at 60 mL/min/1.73 m² (the KDIGO CKD threshold).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DATA = ROOT / "models" / "data" / "flchain" / "flchain.arff"
sys.path.insert(0, str(ROOT))

from service.clinical.equations import Sex, egfr_ckd_epi_2021_cr  # noqa: E402
from service.clinical.mortality import FEATURES, features  # noqa: E402

SEED = 20261126
HORIZON_DAYS = 1826  # 5 years
BOOTSTRAPS = 1000
# CKD Prognosis Consortium (Matsushita et al., Lancet 2010): all-cause mortality HR vs eGFR >= 60.
CKD_PC_HR = {"45-59": 1.2, "30-44": 1.6, "15-29": 3.0}


def read_arff(path: Path) -> pd.DataFrame:
    """Parse the ARFF defensively: '?' is missing, stray spaces are stripped."""
    names: list[str] = []
    rows: list[list[str]] = []
    in_data = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if line.lower().startswith("@attribute"):
            names.append(line.split()[1])
        elif line.lower().startswith("@data"):
            in_data = True
        elif in_data:
            rows.append([cell.strip() for cell in line.split(",")])
    frame = pd.DataFrame(rows, columns=names).replace("?", np.nan)
    for column in ("age", "creatinine", "futime", "sample.yr"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def cohort(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    counts = {"rows": len(frame)}
    frame = frame[frame["age"] >= 50].dropna(subset=["creatinine", "futime", "age", "sex"])
    counts["with_creatinine"] = len(frame)
    frame = frame.assign(
        dead=(frame["death"] == "dead").astype(int),
        male=(frame["sex"] == "M").astype(int),
        egfr=[egfr_ckd_epi_2021_cr(scr, age, Sex.MALE if sex == "M" else Sex.FEMALE)
              for scr, age, sex in zip(frame["creatinine"], frame["age"], frame["sex"], strict=True)],
    )  # fmt: skip
    known = (frame["futime"] >= HORIZON_DAYS) | (frame["dead"] == 1)
    counts["censored_before_5y_excluded"] = int((~known).sum())
    frame = frame[known].assign(y=lambda f: ((f["dead"] == 1) & (f["futime"] < HORIZON_DAYS)).astype(int))
    counts["analysed"] = len(frame)
    counts["deaths_within_5y"] = int(frame["y"].sum())
    return frame.reset_index(drop=True), counts


def design(frame: pd.DataFrame) -> np.ndarray:
    return np.array([features(a, m, e) for a, m, e in zip(frame["age"], frame["male"], frame["egfr"], strict=True)])


def fit(frame: pd.DataFrame) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(penalty=None, solver="lbfgs", max_iter=5000, tol=1e-10)
    return model.fit(design(frame), frame["y"].to_numpy())


def scores(y: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """AUC and Brier score with percentile bootstrap 95 % intervals."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    aucs, briers = [], []
    n = len(y)
    for _ in range(BOOTSTRAPS):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], p[idx]))
        briers.append(brier_score_loss(y[idx], p[idx]))

    def ci(values: list[float]) -> list[float]:
        return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]

    return {
        "n": int(n), "events": int(y.sum()),
        "auc": round(float(roc_auc_score(y, p)), 4), "auc_95ci": ci(aucs),
        "brier": round(float(brier_score_loss(y, p)), 4), "brier_95ci": ci(briers),
    }  # fmt: skip


def calibration(y: np.ndarray, p: np.ndarray, groups: int = 10) -> list[dict[str, Any]]:
    order = np.argsort(p, kind="stable")
    table = []
    for i, idx in enumerate(np.array_split(order, groups), start=1):
        table.append({"decile": i, "n": len(idx), "mean_predicted": round(float(p[idx].mean()), 4),
                      "observed": round(float(y[idx].mean()), 4)})  # fmt: skip
    return table


def hazard_ratios(frame: pd.DataFrame) -> dict[str, Any]:
    """Cox model of all-cause death over full follow-up by eGFR band (>= 60 reference), adjusted for age and sex."""
    from lifelines import CoxPHFitter

    data = frame[["futime", "dead", "age", "male"]].copy()
    bands = {"45-59": (45, 60), "30-44": (30, 45), "15-29": (15, 30)}
    for name, (low, high) in bands.items():
        data[f"egfr_{name}"] = ((frame["egfr"] >= low) & (frame["egfr"] < high)).astype(int)
    data = data[frame["egfr"] >= 15]  # too few below 15 for a band
    cox = CoxPHFitter().fit(data, duration_col="futime", event_col="dead")
    summary = cox.summary
    out = {}
    for name in bands:
        row = summary.loc[f"egfr_{name}"]
        out[name] = {
            "hr": round(float(row["exp(coef)"]), 3),
            "hr_95ci": [round(float(row["exp(coef) lower 95%"]), 3), round(float(row["exp(coef) upper 95%"]), 3)],
            "n": int(data[f"egfr_{name}"].sum()), "ckd_pc_published": CKD_PC_HR[name],
        }  # fmt: skip
    return out


def sig6(x: float) -> float:
    return float(f"{x:.6g}")


def train(out_dir: Path) -> dict[str, Any]:
    frame, counts = cohort(read_arff(DATA))
    rng = np.random.default_rng(SEED)

    # Random split 70/30 (stratified by outcome).
    test = np.zeros(len(frame), dtype=bool)
    for outcome in (0, 1):
        idx = np.flatnonzero(frame["y"].to_numpy() == outcome)
        test[rng.choice(idx, size=round(0.3 * len(idx)), replace=False)] = True
    random_model = fit(frame[~test])
    p_random = random_model.predict_proba(design(frame[test]))[:, 1]
    y_random = frame.loc[test, "y"].to_numpy()

    # Temporal split: drawn 1995-1997 for training, 1998-2003 for testing.
    early = frame["sample.yr"] <= 1997
    temporal_model = fit(frame[early])
    p_temporal = temporal_model.predict_proba(design(frame[~early]))[:, 1]

    final = fit(frame)  # the published coefficients: all eligible people
    model = {
        "name": "mortality_flchain", "version": 1,
        "outcome": "death from any cause within 5 years",
        "population": "adults aged 50 and over (Olmsted County, Minnesota, 1995-2003)",
        "egfr_equation": "ckd-epi-2021-cr", "features": FEATURES,
        "intercept": sig6(final.intercept_[0]),
        "coefficients": {name: sig6(c) for name, c in zip(FEATURES, final.coef_[0], strict=True)},
    }  # fmt: skip
    metrics = {
        "cohort": counts,
        "random_split": scores(y_random, p_random, rng),
        "temporal_split": {
            "train": "sample.yr 1995-1997",
            "test": "sample.yr 1998-2003",
            **scores(frame.loc[~early, "y"].to_numpy(), p_temporal, rng),
        },
        "calibration_random_split": calibration(y_random, p_random),
        "hazard_ratios_vs_egfr_ge_60": hazard_ratios(frame),
    }
    import lifelines
    import sklearn

    manifest = {
        "data": str(DATA.relative_to(ROOT)), "data_sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
        "seed": SEED, "bootstraps": BOOTSTRAPS, "python": platform.python_version(),
        "libraries": {"numpy": np.__version__, "pandas": pd.__version__, "scikit-learn": sklearn.__version__,
                      "lifelines": lifelines.__version__},
    }  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in (("model.json", model), ("metrics.json", metrics), ("training_manifest.json", manifest)):
        (out_dir / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return {"model": model, "metrics": metrics, "manifest": manifest}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    result = train(args.out)
    print(json.dumps({"model": result["model"], "random_split": result["metrics"]["random_split"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
