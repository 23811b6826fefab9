package cmdexittest

import (
	"reflect"
	"testing"
)

func TestDuplicateKeys(t *testing.T) {
	tests := []struct {
		line string
		want []string
		bad  bool
	}{
		{`{"a":1,"b":"x"}`, nil, false},
		{`{"component":"slipway-server","component":"registry","m":"x"}`, []string{"component"}, false},
		{`{"a":{"b":1,"b":2},"c":[{"d":1,"d":1}],"e":{"a":1}}`, []string{"b", "d"}, false},
		{`{"a":1`, nil, true},
		{`{"a":1} x`, nil, true},
	}
	for _, tt := range tests {
		got, err := DuplicateKeys([]byte(tt.line))
		if (err != nil) != tt.bad || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DuplicateKeys(%s) = %v, %v; want %v (error %v)", tt.line, got, err, tt.want, tt.bad)
		}
	}
	p, n := LogProblems("slipway-server: error: x\n{\"a\":1}\n{\"a\":1,\"a\":2}\n")
	if n != 2 || len(p) != 1 {
		t.Errorf("LogProblems: %v, %d lines", p, n)
	}
}
