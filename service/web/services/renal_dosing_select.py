"""The `ckd-renal-dosing-select` service (hook `order-select`): kidney dose checks of the medication orders the
clinician has just selected (renal dosing spec RD-8.4). Avoid, contraindicated and missing-kidney-data cards always
show; dose rules only when the dose can already be read (RD-7.1). The shared dosing step is
`service.web.order_hooks`."""

from __future__ import annotations

from service.web.order_hooks import order_service

SERVICE = order_service(
    "ckd-renal-dosing-select",
    "order-select",
    title="Kidney dose check when a medicine is selected",
    description="Checks the selected medication orders against kidney function (Cockcroft-Gault creatinine clearance "
    "or eGFR, as each drug's label uses) and a pharmacist-reviewed renal dosing table: avoid, contraindicated, above "
    "the label dose, anticoagulant below the label dose, or not checkable (missing weight, old or rising creatinine). "
    "Decision support only.",
)
