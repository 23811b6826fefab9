package metricstest

import (
	"strings"
	"testing"
)

const text = `# TYPE c counter
c{route="a",code="200"} 3
c{route="a",code="500"} 1
# TYPE g gauge
g 7
# TYPE h histogram
h_bucket{le="+Inf"} 4
h_sum 1
h_count 4
`

func TestValue(t *testing.T) {
	f := Parse(t, strings.NewReader(text))
	for _, tc := range []struct {
		name string
		want map[string]string
		v    float64
		ok   bool
	}{
		{"c", map[string]string{"route": "a", "code": "500"}, 1, true},
		{"c", map[string]string{"code": "200"}, 3, true},
		{"c", map[string]string{"code": "404"}, 0, false},
		{"g", nil, 7, true},
		{"g", map[string]string{"node": "x"}, 0, false}, // a wanted label the series lacks
		{"h", nil, 4, true},
		{"missing", nil, 0, false},
	} {
		if v, ok := f.Value(tc.name, tc.want); v != tc.v || ok != tc.ok {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", tc.name, tc.want, v, ok, tc.v, tc.ok)
		}
	}
}
