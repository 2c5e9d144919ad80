"""The peer of `make bench` (issue #15): HealthChain's CDS Hooks service, a patient-view service returning one
static card, as HealthChain's own documentation writes one (healthchain.gateway.CDSHooksService on HealthChainAPI,
FastAPI). Runs in its own virtual environment (bench/.venv-healthchain, made by the harness) under uvicorn with as
many worker processes as the service's gunicorn, on the same request bodies.

    bench/.venv-healthchain/bin/python bench/peer_healthchain.py HOST PORT WORKERS

Its route is /cds/cds-services/ckd-patient-view: HealthChain mounts CDS Hooks under /cds.
"""

from __future__ import annotations

import socket
import sys

from healthchain.gateway import CDSHooksService, HealthChainAPI
from healthchain.models import CDSRequest, CDSResponse

app = HealthChainAPI(title="ckd-cds bench peer", enable_events=False)
cds = CDSHooksService(use_events=False)


@cds.hook("patient-view", id="ckd-patient-view")
def patient_view(request: CDSRequest) -> CDSResponse:
    return CDSResponse(cards=[{"summary": "Static peer card", "indicator": "info", "source": {"label": "peer"}}])


app.register_service(cds)


def main() -> None:
    """uvicorn's own start with several workers (uvicorn.main.run: bind, then Multiprocess), except that the
    listening socket is made with proto=IPPROTO_TCP.

    uvicorn's Config.bind_socket leaves proto at 0, so asyncio does not set TCP_NODELAY on the accepted sockets,
    and every keep-alive request after the first waits about 43 ms for the client's delayed ACK on Linux (uvicorn
    issue #3149, open). Measured here with wrk: 44 ms per request with `--workers 4`, 0.7 ms with one worker. The
    benchmark compares HealthChain, not that socket option.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    host, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = uvicorn.Config("peer_healthchain:app", host=host, port=port, workers=workers, log_level="warning",
                            access_log=False)  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    Multiprocess(config, sockets=[sock]).run()


if __name__ == "__main__":
    main()
