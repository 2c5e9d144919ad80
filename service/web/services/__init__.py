"""The CDS services of this server, one module each; discovery is generated from SERVICES.

To add a service: write `service/web/services/<name>.py` declaring a `CdsService` (its hook, prefetch templates and
`respond` step, see `patient_view.py`) and list it here. Authentication, request checks, data acquisition, audit,
feedback and override memory come from `service.web.hooks` for every service alike.
"""

from __future__ import annotations

from service.web.registry import CdsService
from service.web.services import patient_view

SERVICES: dict[str, CdsService] = {s.id: s for s in (patient_view.SERVICE,)}
