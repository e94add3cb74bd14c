# One image for every store: hedgeplug, the postgres and etcd lock backends and
# the Prometheus metrics plugin, installed from this repository.
#   docker build -t hedgeplug:0.1.0 .
# deploy/kubernetes/ runs it; docs/kubernetes.md walks through it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Distributions of this repository to install beside hedgeplug (plugins/<name>).
ARG PLUGINS="hedgeplug-postgres hedgeplug-etcd hedgeplug-prometheus"

COPY pyproject.toml README.md /src/hedgeplug/
COPY src /src/hedgeplug/src
COPY plugins /src/hedgeplug/plugins
RUN cd /src/hedgeplug \
    && pip install . $(for p in $PLUGINS; do printf './plugins/%s ' "$p"; done) \
    && cd / && rm -rf /src/hedgeplug \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin hedgeplug

USER 10001:10001

# 7946: the transport ([transport] bind); 8080: health probes and /metrics (--health).
EXPOSE 7946 8080

# Exec form: hedgeplug is PID 1 and gets SIGTERM itself, leaves the cluster
# and releases its lease within [node] stop_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hedgeplug", "run"]
CMD ["--config", "/etc/hedgeplug/hedgeplug.toml", "--health", "0.0.0.0:8080"]
