# hotdata: the Slack bot for PostgreSQL, as a container.
#
#   docker build -t hotdata .
#   docker run -d --name hotdata --stop-timeout 40 --env-file .env -p 3000:3000 hotdata
#   docker run --rm --env-file .env hotdata doctor
#
# Two stages: the first builds hotdata and its dependencies into a virtual environment, the
# second is the runtime image with that environment, a PostgreSQL client and nothing else.

# ---- build ------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/hotdata
WORKDIR /src
# pyproject.toml names README.md as the package readme and ships migrations/ and runbooks/
# inside the wheel, so all of them are needed to build. runbooks/ must contain at least one
# tracked file (git does not keep empty directories, and COPY fails on a missing source).
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY handlers/ handlers/
COPY migrations/ migrations/
COPY runbooks/ runbooks/
# A regular (not editable) install: the code, migrations and runbooks all land in the venv.
RUN /opt/hotdata/bin/pip install --upgrade pip \
 && /opt/hotdata/bin/pip install .

# ---- runtime ----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

# The PostgreSQL client major version (pg_dump, pg_restore, psql).
# pg_dump refuses to dump a server newer than itself, so PG_MAJOR must be >= the major
# version of every server hotdata backs up or drills (check with `SHOW server_version`).
# A newer pg_dump reads older servers fine, so use the newest major you run, e.g.
#   docker build --build-arg PG_MAJOR=18 -t hotdata .
ARG PG_MAJOR=17
# pgBackRest drills (HOTDATA_DRILL_SOURCE=pgbackrest) restore a whole cluster and start it, so
# they need pgbackrest and the server binaries of the backups' major version:
#   docker build --build-arg EXTRA_PACKAGES="pgbackrest postgresql-17" -t hotdata .
ARG EXTRA_PACKAGES=""

# The versioned client directory comes first on PATH, so hotdata runs that exact pg_dump.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/hotdata/bin:/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH

# Debian's own client lags behind current servers, so the client comes from the PostgreSQL
# project's apt repository (apt.postgresql.org). postgresql-common ships the repository's
# signing key and the script that adds the repository with that key (Signed-By).
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates postgresql-common; \
    /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y; \
    apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" ${EXTRA_PACKAGES}; \
    rm -rf /var/lib/apt/lists/*; \
    pg_dump --version; \
    pg_dump --version | grep -q " ${PG_MAJOR}\."

COPY --from=build /opt/hotdata /opt/hotdata

# Run as an unprivileged user. Its home is the working directory, where a mounted `.env`
# would be read from (environment variables, e.g. `--env-file`, are the usual way).
RUN useradd --system --create-home --home-dir /home/hotdata --shell /usr/sbin/nologin hotdata
USER hotdata
WORKDIR /home/hotdata

# HTTP mode: Slack requests at /slack/events and the health check at /healthz, on
# HOTDATA_PORT (default 3000). In Socket Mode only /healthz is served on that port.
EXPOSE 3000

# slim images have no curl: ask /healthz with Python's urllib. Shell form, so HOTDATA_PORT is
# read from the container's environment when the check runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${HOTDATA_PORT:-3000}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["hotdata"]
CMD ["serve"]
