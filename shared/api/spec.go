package api

import _ "embed" // Spec

// Spec is the OpenAPI 3.0 document of every route in Routes, as the server
// serves it on RouteOpenAPI (Content-Type SpecContentType). Treat it as
// read-only.
//
//go:embed openapi.yaml
var Spec []byte

// SpecContentType is the media type of Spec on RouteOpenAPI (RFC 9512).
const SpecContentType = "application/yaml"
