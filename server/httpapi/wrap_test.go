package httpapi

import (
	"net/http"
	"testing"

	"github.com/slipway-dev/slipway/shared/api/apitest"
)

// wrap checks every request and response of a test against the OpenAPI
// spec; the returned validator can require that every route was used.
func wrap(t *testing.T, h http.Handler) (http.Handler, *apitest.Validator) {
	v := apitest.New(t)
	return v.Handler(h), v
}
