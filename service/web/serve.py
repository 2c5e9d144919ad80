"""`ckd-cds serve`: gunicorn with the committed gunicorn.conf.py, or the Flask server with --dev."""

from __future__ import annotations

import os
from pathlib import Path

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def serve(*, host: str | None, port: int | None, config: str | None, dev: bool) -> None:
    if config:
        os.environ["CKD_CDS_CONFIG"] = config
    if host:
        os.environ["CKD_CDS_HOST"] = host
    if port:
        os.environ["CKD_CDS_PORT"] = str(port)
    from service.web import create_app
    from service.web.settings import Settings

    settings = Settings.from_env()
    app = create_app(settings)  # validates the configuration before binding: refuse to start on a bad config
    if dev:
        app.run(host=settings.host, port=settings.port, debug=False)
        return
    from gunicorn.app.wsgiapp import WSGIApplication

    class Application(WSGIApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.load_config_from_file(str(GUNICORN_CONF))
            self.cfg.set("bind", f"{settings.host}:{settings.port}")

        def load(self) -> object:
            return app

    Application("%(prog)s [OPTIONS]").run()
