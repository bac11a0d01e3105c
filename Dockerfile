# The magnesium–AKI CDS service: one image for the web (gunicorn) and MLLP processes.
# TLS is terminated by a reverse proxy in front (docs/deployment.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CDS_MAPPINGS=/app/mappings \
    CDS_HTTP_HOST=0.0.0.0 \
    CDS_HTTP_PORT=8080 \
    CDS_MLLP_HOST=0.0.0.0 \
    CDS_MLLP_PORT=2575 \
    CDS_AUTH=jwt \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cds-metrics

RUN groupadd --system --gid 10001 cds \
    && useradd --system --uid 10001 --gid cds --home-dir /app --shell /usr/sbin/nologin cds

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY mappings ./mappings
RUN pip install . && rm -rf build

USER cds
EXPOSE 8080 2575

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1

CMD ["cds-service", "serve"]
