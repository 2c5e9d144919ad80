"""Recommendation thresholds: the typed configuration the rules read (clinical spec §7.5).

Defaults are the spec's. Only §7 thresholds are configurable; the staging constants in §4–§5 are fixed.
`config/schema.json` gives each key's allowed range, unit and source; `service.config` validates YAML against it
and builds these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class ProblemList:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AcrTest:
    max_age_days: int = 365
    include_risk_groups: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Rasi:
    min_egfr: float = 15
    include_a2_nondiabetic: bool = True
    max_potassium: float = 5.0
    suggested_agents: tuple[str, ...] = ("lisinopril", "losartan")
    starting_dose: dict[str, str] = field(
        default_factory=lambda: {
            "lisinopril": "lisinopril 5 mg once daily",
            "losartan": "losartan 25 mg once daily",
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Sglt2i:
    min_egfr: float = 20
    acr_mg_g: float = 200
    low_acr_max_egfr: float = 45
    include_low_acr: bool = True
    suggested_agents: tuple[str, ...] = ("empagliflozin", "dapagliflozin")
    starting_dose: dict[str, str] = field(
        default_factory=lambda: {
            "empagliflozin": "empagliflozin 10 mg once daily",
            "dapagliflozin": "dapagliflozin 10 mg once daily",
        }
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Finerenone:
    min_egfr: float = 25
    max_potassium: float = 5.0
    suggested_agents: tuple[str, ...] = ("finerenone",)
    # FDA Kerendia label (to verify): 10 mg once daily at eGFR 25–< 60; 20 mg at eGFR ≥ 60 (`dose_egfr_60`)
    starting_dose: dict[str, str] = field(
        default_factory=lambda: {"finerenone": "finerenone 10 mg once daily; recheck K+ at 4 weeks"}
    )
    dose_egfr_60: str = "finerenone 20 mg once daily; recheck K+ at 4 weeks"


@dataclass(frozen=True, slots=True, kw_only=True)
class Glp1ra:
    hba1c_target: float = 7.0
    mode: str = "kdigo"
    hba1c_max_age_days: int = 365
    suggested_agents: tuple[str, ...] = ("semaglutide",)
    starting_dose: dict[str, str] = field(
        default_factory=lambda: {"semaglutide": "semaglutide 0.25 mg subcutaneously once weekly"}
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Statin:
    min_age: int = 50
    young_with_diabetes: bool = True
    discuss_from_age: int = 80  # [2.1] §7.2: "discuss a statin", no draft (USPSTF 2022, ACC/AHA 2018, NICE NG238)
    suggested_agents: tuple[str, ...] = ("atorvastatin",)
    starting_dose: dict[str, str] = field(default_factory=lambda: {"atorvastatin": "atorvastatin 20 mg once daily"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Metformin:
    reduce_below_egfr: float = 45
    stop_below_egfr: float = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class Nsaid:
    max_egfr: float = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class NephrologyReferral:
    max_egfr: float = 30
    kfre_5y_min: float = 0.05
    kfre_2y_mdc: float = 0.10
    on_progression: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class KrtPlanning:
    max_egfr: float = 15
    kfre_2y: float = 0.40
    transplant_max_age: int = 75  # [2.1] §7.2: the card names transplant evaluation only below this age


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressionReview:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AkiCaution:
    lookback_days: int = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class Potassium:
    max_age_days: int = 90


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressureSettings:
    """[2.1] bp_above_target (KDIGO 2021 BP in CKD Rec 3.1.1: systolic < 120 mm Hg when tolerated)."""

    enabled: bool = True
    systolic_target: int = 120
    margin: int = 10
    lookback_days: int = 365


@dataclass(frozen=True, slots=True, kw_only=True)
class Hyperkalaemia:
    enabled: bool = True
    min_potassium: float = 5.5


@dataclass(frozen=True, slots=True, kw_only=True)
class DualRas:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitoringDue:
    enabled: bool = True
    grace_days: int = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class StagingSettings:
    akd_window: bool = True  # [2.1] S5 (e): the one staging switch (spec §1)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackSettings:
    snooze_days: int = 90  # 0 = overrides are not remembered
    dismiss_snooze_days: int = 1  # clinical spec 2.1 §7.4 rule 1: an override without a reason; 0 = not remembered


@dataclass(frozen=True, slots=True, kw_only=True)
class KfreSettings:
    region: str = "north-american"
    variables: int | str = 4
    extra_labs_max_age_days: int = 365


@dataclass(frozen=True, slots=True, kw_only=True)
class MortalityContext:
    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSettings:
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True, kw_only=True)
class CardRule:
    enabled: bool = True
    indicator: str = "default"  # or info, warning, critical
    snooze_days: int | None = None  # None: feedback.snooze_days


# Every card a site can switch on or off: the §7.2 rule ids and the staging card (config/schema.json cards.rules).
CARD_IDS = (
    "problem_list", "acr_test", "aki_caution", "metformin_stop", "metformin_reduce", "nsaid_avoid", "sglt2i",
    "rasi", "finerenone", "glp1ra", "statin", "nephrology_referral", "krt_planning", "progression_review", "staging",
    "hyperkalaemia", "dual_ras", "monitoring_due", "new_egfr_fall", "creatinine_conflict", "coded_stage_outdated",
    "bp_above_target",
)  # fmt: skip


def all_card_rules(given: dict[str, CardRule] | None = None) -> dict[str, CardRule]:
    """Every card id with its setting: explicit, so two versions differ only where someone changed something."""
    return {card: (given or {}).get(card, CardRule()) for card in CARD_IDS}


@dataclass(frozen=True, slots=True, kw_only=True)
class CardSettings:
    """Which cards are shown, how urgently, and how many (site policy; CDS Hooks contract D-05)."""

    max_cards: int = 5
    rules: dict[str, CardRule] = field(default_factory=all_card_rules)

    def rule(self, rule_id: str) -> CardRule:
        return self.rules.get(rule_id, CardRule())


@dataclass(frozen=True, slots=True, kw_only=True)
class FhirSettings:
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 2.0
    budget_s: float = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CrclSettings:
    weight: str = "actual"  # or "adjusted_if_obese" (renal dosing RD-3.2)
    scr_floor_mg_dl: float | None = None  # RD-3.1


@dataclass(frozen=True, slots=True, kw_only=True)
class RenalDosing:
    """Renal dosing at order time (renal dosing spec RD-10.1); `drugs` holds the site's overlays of the drug table."""

    enabled: bool = True
    weight_max_age_days: int = 90
    height_max_age_days: int = 1825
    scr_max_age_days: int = 365
    crcl: CrclSettings = field(default_factory=CrclSettings)
    override_memory_hours: int = 12
    suggestions: bool = True
    drugs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteCode:
    """A local laboratory code read as a LOINC code (contract D-03)."""

    system: str
    code: str
    loinc: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """All configurable thresholds, grouped as in the YAML file (`sglt2i.min_egfr` is `thresholds.sglt2i.min_egfr`)."""

    problem_list: ProblemList = field(default_factory=ProblemList)
    acr_test: AcrTest = field(default_factory=AcrTest)
    rasi: Rasi = field(default_factory=Rasi)
    sglt2i: Sglt2i = field(default_factory=Sglt2i)
    finerenone: Finerenone = field(default_factory=Finerenone)
    glp1ra: Glp1ra = field(default_factory=Glp1ra)
    statin: Statin = field(default_factory=Statin)
    metformin: Metformin = field(default_factory=Metformin)
    nsaid: Nsaid = field(default_factory=Nsaid)
    nephrology_referral: NephrologyReferral = field(default_factory=NephrologyReferral)
    krt_planning: KrtPlanning = field(default_factory=KrtPlanning)
    progression_review: ProgressionReview = field(default_factory=ProgressionReview)
    aki_caution: AkiCaution = field(default_factory=AkiCaution)
    potassium: Potassium = field(default_factory=Potassium)
    hyperkalaemia: Hyperkalaemia = field(default_factory=Hyperkalaemia)
    dual_ras: DualRas = field(default_factory=DualRas)
    monitoring_due: MonitoringDue = field(default_factory=MonitoringDue)
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)
    staging: StagingSettings = field(default_factory=StagingSettings)
    bp: BloodPressureSettings = field(default_factory=BloodPressureSettings)
    kfre: KfreSettings = field(default_factory=KfreSettings)
    mortality_context: MortalityContext = field(default_factory=MortalityContext)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    cards: CardSettings = field(default_factory=CardSettings)
    fhir: FhirSettings = field(default_factory=FhirSettings)
    renal_dosing: RenalDosing = field(default_factory=RenalDosing)
    site_codes: tuple[SiteCode, ...] = ()


def thresholds_from_dict(data: dict[str, Any]) -> Thresholds:
    """Build Thresholds from a validated mapping; missing sections and keys take the defaults."""
    sections: dict[str, Any] = {}
    defaults = Thresholds()
    for f in fields(Thresholds):
        if f.name == "site_codes":
            sections[f.name] = tuple(SiteCode(**item) for item in data.get("site_codes", ()))
            continue
        if f.name == "cards":
            cards = dict(data.get("cards", {}))
            rules = {rule: CardRule(**values) for rule, values in cards.pop("rules", {}).items()}
            sections[f.name] = CardSettings(**cards, rules=all_card_rules(rules))
            continue
        if f.name == "renal_dosing":
            dosing = dict(data.get("renal_dosing", {}))
            crcl = CrclSettings(**dosing.pop("crcl", {}))
            sections[f.name] = RenalDosing(**dosing, crcl=crcl)
            continue
        section_cls: Any = type(getattr(defaults, f.name))
        values = dict(data.get(f.name, {}))
        if "suggested_agents" in values:
            values["suggested_agents"] = tuple(values["suggested_agents"])
        if "starting_dose" in values:
            values["starting_dose"] = {**section_cls().starting_dose, **values["starting_dose"]}
        sections[f.name] = section_cls(**values)
    return Thresholds(**sections)


def thresholds_to_dict(obj: Any) -> Any:
    """The inverse of thresholds_from_dict, for `config show` and diffs."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: thresholds_to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [thresholds_to_dict(item) for item in obj]
    if isinstance(obj, dict):
        return {key: thresholds_to_dict(value) for key, value in obj.items()}
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # canonical: 25.0 and 25 are one value, so a diff shows only real changes
    return obj
