"""`ckd-cds serve`: gunicorn with the committed gunicorn.conf.py, or the Flask server with --dev.

Outside `service.web` on purpose: importing that package loads prometheus_client, which must only happen after
PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

GUNICORN_CONF = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"


def prepare_multiprocess_metrics() -> None:
    """Prometheus multiprocess mode: one directory per server run, set before prometheus_client is imported."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ckd-cds-metrics-")


def serve(*, host: str | None, port: int | None, config: str | None, dev: bool) -> None:
    if not dev:
        prepare_multiprocess_metrics()
    if config:
        os.environ["CKD_CDS_CONFIG"] = config
    if host:
        os.environ["CKD_CDS_HOST"] = host
    if port:
        os.environ["CKD_CDS_PORT"] = str(port)
    from service.web import create_app
    from service.web.settings import Settings

    settings = Settings.from_env()
    checked = create_app(settings)  # validates every setting before binding: refuse to start on a bad config
    if dev:
        checked.run(host=settings.host, port=settings.port, debug=False)
        return
    checked.extensions["ckd_cds"].store.dispose()  # no database connection may cross the fork
    from gunicorn.app.wsgiapp import WSGIApplication

    class Application(WSGIApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.load_config_from_file(str(GUNICORN_CONF))
            self.cfg.set("bind", f"{settings.host}:{settings.port}")

        def load(self) -> object:
            return create_app(settings)  # in each worker: its own engine, pool and metrics files

    Application("%(prog)s [OPTIONS]").run()
