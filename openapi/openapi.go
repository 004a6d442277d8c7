// Package openapi holds footfall's published contract: openapi.yaml, the
// OpenAPI 3.0 document of every HTTP route (health, documents, the WebSocket
// handshakes, SSE, REST snapshots, the service API and the dev token), and
// asyncapi.yaml, the AsyncAPI 3.0 document of the WebSocket and SSE message
// flow, whose payloads are the schemas of openapi.yaml.
//
// Both are embedded so that the binary serves exactly the documents the tests
// hold the code to; openapi/openapitest validates real responses and messages
// against them.
package openapi

import "embed"

//go:embed openapi.yaml asyncapi.yaml
var files embed.FS

// OpenAPI returns the OpenAPI 3.0 document (YAML), served at /openapi.yaml.
// Each call returns a fresh copy.
func OpenAPI() []byte { return mustRead("openapi.yaml") }

// AsyncAPI returns the AsyncAPI 3.0 document (YAML), served at
// /asyncapi.yaml. Each call returns a fresh copy.
func AsyncAPI() []byte { return mustRead("asyncapi.yaml") }

func mustRead(name string) []byte {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(err) // the embedded files are fixed at build time
	}
	return b
}
