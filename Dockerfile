# rdpbalancer in a container: non-root, able to bind 3389, state in a volume.
#
#   docker build -t rdpbalancer .
#   docker run -d -p 3389:3389 -v rdpb-state:/var/lib/rdpbalancer \
#     -v $PWD/config.toml:/etc/rdpbalancer/config.toml:ro rdpbalancer
#
# Without a registry (an offline build host), two build arguments:
#   BASE    another base image with python3 and its venv module, e.g. a Debian 12 made with
#           `debootstrap --variant=minbase --include=python3,python3-venv,libcap2-bin bookworm DIR`
#           and `tar -C DIR -c . | docker import - debian-python:bookworm`
#   WHEELS  a folder of the build context holding the rdpbalancer wheel and every dependency
#           (`pip wheel . async-timeout -w wheels`): installed from there alone, no index
#   docker build --build-arg BASE=debian-python:bookworm --build-arg WHEELS=wheels -t rdpbalancer .
# The build context is this checkout (see .dockerignore), with the wheels folder in it when used.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG WHEELS=

COPY . /src
# One layer: the package in a virtual environment (Debian's own python3 refuses system-wide pip
# installs, PEP 668) and the service user.
RUN set -e; \
    if ! command -v setcap >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends libcap2-bin && rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --home-dir /var/lib/rdpbalancer --create-home --shell /usr/sbin/nologin rdpbalancer; \
    python3 -m venv /opt/rdpbalancer; \
    if [ -n "$WHEELS" ]; then \
      /opt/rdpbalancer/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links "/src/$WHEELS" rdpbalancer; \
    else \
      /opt/rdpbalancer/bin/pip install --no-cache-dir --disable-pip-version-check /src; \
    fi; \
    install -D -m 0644 /src/config.example.toml /etc/rdpbalancer/config.toml; \
    rm -rf /src; \
    ln -s /opt/rdpbalancer/bin/rdpbalancer /usr/local/bin/rdpbalancer

# Then the capabilities the interpreter gets (file capabilities: the process runs as a non-root
# user): cap_net_bind_service so it may bind ports below 1024 (Docker lowers
# ip_unprivileged_port_start in its own network namespaces, not with --network=host). Transparent mode (README "Transparent mode") also needs cap_net_admin:
#   docker build --build-arg CAPS=cap_net_bind_service,cap_net_admin ...
#   docker run --cap-add NET_ADMIN --network=host ...
# an image built so runs only with --cap-add NET_ADMIN (the kernel refuses to start a program
# whose file capabilities the container may not have).
ARG CAPS=cap_net_bind_service
# (its own step after the install, so that a build with another CAPS can take the install's
# layer from the build cache)
RUN setcap "${CAPS}=+ep" "$(readlink -f /opt/rdpbalancer/bin/python3)"

# the example's state path is /var/lib/rdpbalancer/sticky.db: keep it on a volume
VOLUME ["/var/lib/rdpbalancer"]
USER rdpbalancer
WORKDIR /var/lib/rdpbalancer
EXPOSE 3389
STOPSIGNAL SIGTERM
ENTRYPOINT ["rdpbalancer"]
CMD ["run", "-c", "/etc/rdpbalancer/config.toml"]
