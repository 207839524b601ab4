# Multi-stage build of threepidd. SQLite needs cgo, so both stages are Debian
# (glibc) images of the same release.
#
#   docker build -t threepidd .
#   docker run -v /srv/threepidd:/data -p 8090:8090 threepidd -config /data/threepidd.yaml
#   docker run -v /srv/threepidd:/data threepidd generate-key -out /data/signing.key
#
# It runs as uid/gid 10001: make the host directory writable for it
# (chown 10001:10001 /srv/threepidd). In the config, listen on 0.0.0.0:8090
# (metrics_listen 0.0.0.0:9464 if you scrape it), keep the SQLite file under
# /data (a relative dsn such as threepidd.db lands there), and list the
# reverse proxy's address as it reaches the container in trusted_proxies.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o /out/threepidd ./cmd/threepidd

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 threepidd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin threepidd \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /out/threepidd /usr/local/bin/threepidd
# Numeric, so that runtimes enforcing "run as non-root" can check it.
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8090 9464
ENTRYPOINT ["/usr/local/bin/threepidd"]
CMD ["-config", "/data/threepidd.yaml"]
