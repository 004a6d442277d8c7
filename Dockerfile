# syntax=docker/dockerfile:1
# Build: a static binary (no cgo), tests not run here (CI runs them).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/footfall ./cmd/footfall

# Run: distroless static, as the non-root user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/footfall /usr/local/bin/footfall
USER nonroot:nonroot
ENV FOOTFALL_ADDR=:8080
EXPOSE 8080
# The image has no shell or curl: footfall checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/footfall", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/footfall"]
