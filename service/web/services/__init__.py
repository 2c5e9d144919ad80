"""The CDS services of this server, one module each; discovery is generated from SERVICES.

To add a service: write `service/web/services/<name>.py` declaring a `CdsService` (its hook, prefetch templates and
`respond` step, see `patient_view.py`; the two order hooks share `service.web.order_hooks`) and list it here.
Authentication, request checks, data acquisition, audit, feedback and override memory come from `service.web.hooks`
for every service alike.
"""

from __future__ import annotations

from service.web.registry import CdsService
from service.web.services import patient_view, renal_dosing_select, renal_dosing_sign

SERVICES: dict[str, CdsService] = {
    s.id: s for s in (patient_view.SERVICE, renal_dosing_select.SERVICE, renal_dosing_sign.SERVICE)
}
