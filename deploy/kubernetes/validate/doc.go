// Package validate holds the test of footfall's Kubernetes manifests
// (deploy/kubernetes): each is decoded strictly against the Kubernetes API
// types and checked against footfall's own settings and the drain it does.
//
// It is a module of its own so that footfall's module gains no dependency
// on the Kubernetes API packages. deploy/deploy_test.go, in footfall's
// module, runs it as part of `go test ./...`.
package validate
