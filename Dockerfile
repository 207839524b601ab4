# Multi-stage build of threepidd. SQLite needs cgo, so both stages are Debian
# (glibc) images of the same release.
#
#   docker build -t threepidd .
#   docker run -v /srv/threepidd:/data -p 8090:8090 threepidd -config /data/threepidd.yaml
#
# In the config, listen on 0.0.0.0:8090 and keep the SQLite file under /data.

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
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin threepidd \
 && mkdir -p /data && chown threepidd /data
COPY --from=build /out/threepidd /usr/local/bin/threepidd
USER threepidd
WORKDIR /data
VOLUME /data
EXPOSE 8090 9464
ENTRYPOINT ["/usr/local/bin/threepidd"]
CMD ["-config", "/data/threepidd.yaml"]
