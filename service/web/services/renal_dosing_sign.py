"""The `ckd-renal-dosing-sign` service (hook `order-sign`): kidney dose checks of every medication order being signed,
with full dose checks (renal dosing spec RD-8.5). A card overridden at selection for the same draft is not repeated
here: both services share rule ids and override memory (RD-8.6). The shared dosing step is
`service.web.order_hooks`."""

from __future__ import annotations

from service.web.order_hooks import order_service

SERVICE = order_service(
    "ckd-renal-dosing-sign",
    "order-sign",
    title="Kidney dose check before signing",
    description="Checks every medication order being signed against kidney function and the renal dosing table, with "
    "full dose checks. Decision support only.",
)
