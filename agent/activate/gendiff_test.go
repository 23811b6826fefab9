package activate

import (
	"slices"
	"testing"

	"github.com/slipway-dev/slipway/shared/gendiff"
	"github.com/slipway-dev/slipway/shared/generation"
)

// The preview (`slipway diff`, shared/gendiff) must call a unit changed
// exactly when a switch restarts it. FuzzDiffMatchesGendiff holds the two
// rules together: change one, change the other.
func FuzzDiffMatchesGendiff(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"units":{"a.service":"ExecStart=/var/lib/slipway/current/artifacts/web files/c.conf /etc/x"},"artifacts":[{"name":"web","sha256":"aa","size":1}],"files":{"c.conf":{"content":"x"}},"links":[{"path":"/etc/x","file":"c.conf"}]}`,
		`{"units":{"a.service":"ExecStart=/var/lib/slipway/current/artifacts/web files/c.conf /etc/x"},"artifacts":[{"name":"web","sha256":"bb","size":1}],"files":{"c.conf":{"content":"y","mode":"0600"}},"links":[{"path":"/etc/x","artifact":"web"}]}`,
		`{"units":{"db.service":"LoadCredential=pw:/x\nExecStart=/bin/db /run/slipway/secrets/current/key"},"secrets":[{"name":"pw","ciphertext":"a"},{"name":"key","ciphertext":"b","mode":"0400"}]}`,
		`{"units":{"db.service":"LoadCredential=pw:/x\nExecStart=/bin/db /run/slipway/secrets/current/key-2"},"secrets":[{"name":"pw","ciphertext":"c"},{"name":"key","ciphertext":"d","owner":"db"}]}`,
		`{"units":{"b.socket":"[Socket]\nListenStream=1","c.timer":"x"}}`,
	}
	for _, a := range seeds {
		for _, b := range seeds {
			f.Add([]byte(a), []byte(b))
		}
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		from, err := generation.Parse(a)
		if err != nil {
			return
		}
		to, err := generation.Parse(b)
		if err != nil {
			return
		}
		plan := diff(from, to)
		units := gendiff.Compare(from, to).Units
		var changed []string
		for _, c := range units.Changed {
			changed = append(changed, c.Name)
		}
		if !slices.Equal(plan.Added, units.Added) || !slices.Equal(plan.Changed, changed) || !slices.Equal(plan.Removed, units.Removed) {
			t.Fatalf("agent plan %+v, preview %+v\nfrom: %s\nto:   %s", plan, units, a, b)
		}
	})
}
