# syntax=docker/dockerfile:1
# Legate image: a static binary on a distroless base, run as non-root.
#   docker build -t ghcr.io/legateproxy/legate:dev .
#   docker run --rm -v $PWD/envoy.yaml:/etc/envoy/envoy.yaml ghcr.io/legateproxy/legate:dev proxy -c /etc/envoy/envoy.yaml

# build compiles a static legate binary.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/legate ./cmd/legate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/legate /usr/local/bin/legate
USER 65532:65532
EXPOSE 8080 8443 8001 8000 8002 9901
ENTRYPOINT ["legate"]
CMD ["--help"]
