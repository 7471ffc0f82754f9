# capctl container image: `capctl` is the entrypoint, the daemon (`run`) the default command.
#   docker build -t capctl:0.1.0 .
#   docker run --read-only --tmpfs /tmp -e CAPCTL_STATE=postgresql://... -v "$PWD/specs:/specs:ro" capctl:0.1.0
# (the default command sets no token: beyond your own machine, give the daemon its tokens as docs/operations.md,
# "The container image", shows)
# No registry in reach? deploy/image/local-base.sh builds a Debian base to pass as --build-arg PYTHON_IMAGE
# (docs/operations.md, "Building the image"; the test suite builds and runs the image that way).
# Two stages: the build stage installs capctl into a virtualenv with exactly the versions of constraints.txt;
# the runtime stage copies only that virtualenv (no pip cache, no build tools, no sources) and runs as a
# non-root user. Nothing is written under / at run time (byte code is compiled at build time), so the image
# works with a read-only root file system; the SQLite default state lives in /var/lib/capctl (mount a volume
# there, or use PostgreSQL via CAPCTL_STATE, as deploy/ does).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py constraints.txt README.md LICENSE ./
# reconciler/docs and reconciler/quickstart link to these two: the install copies their files into the package.
COPY docs ./docs
COPY specs ./specs
COPY reconciler ./reconciler
# A regular (non-editable) install: the runtime stage needs no /src. The pip pin comes from constraints.txt too.
RUN python -m venv /opt/capctl \
    && /opt/capctl/bin/pip install -c constraints.txt pip \
    && /opt/capctl/bin/pip install -c constraints.txt . \
    && /opt/capctl/bin/python -m compileall -q /opt/capctl

FROM ${PYTHON_IMAGE}
# A fixed numeric id, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 capctl \
    && useradd --system --uid 10001 --gid capctl --home-dir /var/lib/capctl --create-home --shell /usr/sbin/nologin capctl
COPY --from=build /opt/capctl /opt/capctl
ENV PATH=/opt/capctl/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CAPCTL_STATE=sqlite:////var/lib/capctl/state.db
WORKDIR /var/lib/capctl
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["capctl"]
CMD ["run", "/specs", "--listen", "0.0.0.0:8080"]
