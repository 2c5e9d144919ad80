"""Golden responses (issue #15): every hook response byte for byte, before and after a change, in the same run.

Calls the real Flask app (temporary SQLite store, audited, production response path) with full prefetch for the
18 demo patients, the 263 Synthea patients of ../shared/data/synthea-smart-r4 (dates moved so that 2021-04-01, the
review date of `make review`, falls on today) and the two `make bench` patients; records each response body exactly.

    python bench/goldens.py --baseline REV   # check out REV in a temporary worktree, dump both, compare
    python bench/goldens.py --dump FILE      # dump this tree's responses only (JSON lines)

Card and suggestion uuids are derived from the hookInstance, so the bodies are deterministic: any byte that
differs is a change of behaviour. Exit status 1 when the two trees differ, with the first differences printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "data" / "synthea-smart-r4"
REVIEW_DAY = date(2021, 4, 1)  # models/validation/alert_burden.py reviews Synthea as of this day
URL_PATH = "/cds-services/ckd-patient-view"


def bodies(today: date) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, hook request body with full prefetch) for every golden patient."""
    from bench.patients import hook_body, small_patient, ten_year_patient
    from service.demo import demo_bundles
    from service.population.generate import patient_bundles, patient_copy

    for slug, bundle in demo_bundles(today).items():
        yield f"demo/{slug}", hook_body(bundle, prefetch=True)
    shift = (today - REVIEW_DAY).days
    if not any(True for _ in patient_bundles(SYNTHEA)):
        raise SystemExit(f"goldens: no Synthea patients in {SYNTHEA}")
    for source in patient_bundles(SYNTHEA):
        items = patient_copy(source, shift)
        items.sort(key=lambda r: r["resourceType"] != "Patient")  # the Patient first, as hook_body expects
        yield f"synthea/{items[0]['id']}", hook_body({"entry": [{"resource": r} for r in items]}, prefetch=True)
    yield "bench/a", hook_body(ten_year_patient(today), prefetch=True)
    yield "bench/b", hook_body(small_patient(today), prefetch=True)


def dump(out: Path) -> None:
    os.environ["CKD_CDS_DATABASE_URL"] = f"sqlite:///{Path(tempfile.mkdtemp(prefix='ckd-goldens-')) / 'store.db'}"
    os.environ["CKD_CDS_VALIDATE_RESPONSES"] = "0"
    import service
    from service.web import create_app

    sys.stderr.write(f"goldens: responses of {Path(service.__file__).parent.parent}\n")
    # a fixed patient-link key (issue #21): card uuids include the link, and each tree would otherwise generate its own
    os.environ.setdefault("CKD_CDS_PATIENT_LINK_SECRET", "goldens-fixed-link-key-" + "0" * 40)
    client = create_app().test_client()
    today = date.today()
    with out.open("w", encoding="utf-8") as handle:
        for name, body in bodies(today):
            response = client.post(URL_PATH, data=json.dumps(body).encode(), content_type="application/json")
            handle.write(json.dumps({"patient": name, "status": response.status_code,
                                     "body": response.get_data(as_text=True)}) + "\n")  # fmt: skip


def load(path: Path) -> dict[str, tuple[int, str]]:
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return {r["patient"]: (r["status"], r["body"]) for r in rows}


def digest(rows: dict[str, tuple[int, str]]) -> str:
    return hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()


def differences(old: dict[str, tuple[int, str]], new: dict[str, tuple[int, str]]) -> list[str]:
    """Patients whose status or body differ, or who are in one dump only."""
    return [name for name in old if old[name] != new.get(name)] + [name for name in new if name not in old]


def compare(baseline: str) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.worktree import checked_out

    work = Path(tempfile.mkdtemp(prefix="ckd-goldens-"))
    before, after = work / "before.jsonl", work / "after.jsonl"
    with checked_out(baseline) as tree:
        # this script, run on the baseline's code: the bodies and the app come from the tree on sys.path
        for where, out in ((tree, before), (ROOT, after)):
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--dump", str(out), "--root", str(where)],
                           check=True)  # fmt: skip
    old, new = load(before), load(after)
    changed = differences(old, new)
    cards = sum(len(json.loads(body).get("cards", [])) for status, body in new.values() if status == 200)
    print(f"{len(new)} patients, {cards} cards; baseline {baseline} sha256 {digest(old)[:16]}, "
          f"this tree {digest(new)[:16]}: {'identical' if not changed else f'{len(changed)} differ'}")  # fmt: skip
    moved = rule_changes(old, new)
    if moved:  # the clinical change, readable: which cards each patient gains or loses
        print(f"{len(moved)} patients whose cards (rule ids, in order) changed:")
        for line in moved:
            print(f"  {line}")
    for name in changed[:3]:
        print(f"  {name}:\n    before {old.get(name)}\n    after  {new.get(name)}")
    return 1 if changed else 0


def rules_of(entry: tuple[int, str] | None) -> list[str]:
    if entry is None or entry[0] != 200:
        return [f"status {entry[0]}"] if entry else ["absent"]
    return [card["extension"]["org.ckd-cds.rule"]["id"] for card in json.loads(entry[1]).get("cards", [])]


def rule_changes(old: dict[str, tuple[int, str]], new: dict[str, tuple[int, str]]) -> list[str]:
    """One line per patient whose card list (rule ids in order) differs: `name: before -> after`."""
    out = []
    for name in sorted(set(old) | set(new)):
        before, after = rules_of(old.get(name)), rules_of(new.get(name))
        if before != after:
            out.append(f"{name}: {' '.join(before) or '(none)'} -> {' '.join(after) or '(none)'}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare this tree with")
    parser.add_argument("--dump", type=Path, help="write this tree's responses (JSON lines)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        sys.path.insert(0, str(args.root))
        sys.path.insert(1, str(ROOT))  # bench.patients from this tree when the baseline predates it
        dump(args.dump)
        return 0
    if not args.baseline:
        parser.error("give --baseline REV or --dump FILE")
    return compare(args.baseline)


if __name__ == "__main__":
    sys.exit(main())
