FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md gunicorn.conf.py ./
COPY service ./service
COPY cards ./cards
COPY config ./config
COPY examples ./examples
COPY docs/openapi.yaml ./docs/openapi.yaml
RUN pip install --no-cache-dir -e . && useradd --system ckd && chown -R ckd /app
USER ckd
EXPOSE 8080
CMD ["ckd-cds", "serve"]
