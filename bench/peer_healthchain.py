"""The peer of `make bench` (issue #15): HealthChain's CDS Hooks service, a patient-view service returning one
static card, as HealthChain's own documentation writes one (healthchain.gateway.CDSHooksService on HealthChainAPI,
FastAPI). Runs in its own virtual environment (bench/.venv-healthchain, made by the harness) under uvicorn with as
many worker processes as the service's gunicorn, on the same request bodies.

Its route is /cds/cds-services/ckd-patient-view: HealthChain mounts CDS Hooks under /cds.
"""

from __future__ import annotations

from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models import CDSRequest, CDSResponse

app = HealthChainAPI(title="ckd-cds bench peer", enable_events=False)
cds = CDSHooksService(use_events=False)


@cds.hook("patient-view", id="ckd-patient-view")
def patient_view(request: CDSRequest) -> CDSResponse:
    return CDSResponse(cards=[{"summary": "Static peer card", "indicator": "info", "source": {"label": "peer"}}])


app.register_service(cds)
