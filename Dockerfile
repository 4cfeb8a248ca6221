# rdpbalancer in a container: non-root, able to bind 3389, state in a volume.
#   docker build -t rdpbalancer .
#   docker run -d -p 3389:3389 -v rdpb-state:/var/lib/rdpbalancer \
#     -v $PWD/config.toml:/etc/rdpbalancer/config.toml:ro rdpbalancer
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/rdpbalancer --create-home --shell /usr/sbin/nologin rdpbalancer

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rdpbalancer ./rdpbalancer
RUN pip install --no-cache-dir . \
 && rm -rf /src \
 # ports below 1024 without root (Docker also lowers ip_unprivileged_port_start by default)
 && setcap cap_net_bind_service=+ep "$(readlink -f "$(command -v python3)")"

COPY config.example.toml /etc/rdpbalancer/config.toml
# the example's state path is /var/lib/rdpbalancer/sticky.db: keep it on a volume
VOLUME ["/var/lib/rdpbalancer"]
USER rdpbalancer
WORKDIR /var/lib/rdpbalancer
EXPOSE 3389
STOPSIGNAL SIGTERM
ENTRYPOINT ["rdpbalancer"]
CMD ["run", "-c", "/etc/rdpbalancer/config.toml"]
