package daemon

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestCrashHookParse(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		hook    bool
	}{
		{in: ""},
		{in: "wave-start", hook: true},
		{in: "observe:3", hook: true},
		{in: "nope", err: `unknown crash point "nope" (known: wave-start, observe,`},
		{in: "observe:0", err: `the count after "observe:" must be a whole number ≥ 1`},
		{in: "observe:x", err: `the count after "observe:" must be a whole number ≥ 1`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			h, err := crashHook(tc.in, zerolog.Nop())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), CrashEnv) {
					t.Fatalf("error %v, want one naming %s and %q", err, CrashEnv, tc.err)
				}
				return
			}
			if err != nil || (h != nil) != tc.hook {
				t.Fatalf("hook %v, error %v; want a hook: %v", h != nil, err, tc.hook)
			}
			if h != nil {
				h("halted") // another point: nothing happens
			}
		})
	}
}
