package waves

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/slipway-dev/slipway/shared/api"
)

func names(waves []api.Wave) []string {
	var out []string
	for _, w := range waves {
		var ns []string
		for _, n := range w.Nodes {
			ns = append(ns, n.Name)
		}
		out = append(out, w.Name+":"+strings.Join(ns, ","))
	}
	return out
}

func TestPlan(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e"}
	for _, tc := range []struct {
		s    api.Strategy
		want []string
	}{
		{api.Strategy{}, []string{"wave 1:a,b,c,d,e"}},
		{api.Strategy{Kind: "all-at-once", MaxParallel: 2}, []string{"wave 1:a,b", "wave 2:c,d", "wave 3:e"}},
		{api.Strategy{Kind: "rolling"}, []string{"wave 1:a", "wave 2:b", "wave 3:c", "wave 4:d", "wave 5:e"}},
		{api.Strategy{Kind: "rolling", BatchSize: 3}, []string{"wave 1:a,b,c", "wave 2:d,e"}},
		{api.Strategy{Kind: "rolling", BatchSize: 3, MaxUnavailable: 2}, []string{"wave 1:a,b", "wave 2:c,d", "wave 3:e"}},
		{api.Strategy{Kind: "canary"}, []string{"canary:a", "wave 2:b,c,d,e"}},
		{api.Strategy{Kind: "canary", Canary: 1, BatchSize: 2}, []string{"canary:a", "wave 2:b,c", "wave 3:d,e"}},
		{api.Strategy{Kind: "canary", CanaryPercent: 30}, []string{"canary:a,b", "wave 2:c,d,e"}},
		{api.Strategy{Kind: "canary", Canary: 9}, []string{"canary:a,b,c,d,e"}},
	} {
		t.Run(fmt.Sprintf("%+v", tc.s), func(t *testing.T) {
			s, _, err := ParseStrategy(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(Plan(s, nodes)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseStrategyRejects(t *testing.T) {
	for _, tc := range []struct {
		s    api.Strategy
		want string
	}{
		{api.Strategy{Kind: "blue-green"}, "strategy.kind"},
		{api.Strategy{Kind: "rolling", BatchSize: -1}, "batch_size"},
		{api.Strategy{Kind: "canary", Canary: 1, CanaryPercent: 10}, "exclusive"},
		{api.Strategy{Kind: "canary", CanaryPercent: 120}, "at most 100"},
		{api.Strategy{Kind: "rolling", Canary: 1}, "need kind canary"},
		{api.Strategy{Kind: "canary", Analysis: "soon"}, "strategy.analysis"},
		{api.Strategy{OnNodeDown: "panic"}, "on_node_down"},
		{api.Strategy{Stagger: "-1s"}, "stagger"},
		{api.Strategy{Windows: []string{"Mon 01:00-02:00 UTC", "Mon-Fri 02:00-05:00 Europe/Berln"}}, `strategy.windows[1]: window "Mon-Fri 02:00-05:00 Europe/Berln": unknown time zone "Europe/Berln"`},
		{api.Strategy{Windows: []string{"Mon-Fri 02:00-05:00"}}, "no time zone"},
		{api.Strategy{Windows: make([]string, 33)}, "at most 32"},
	} {
		if _, _, err := ParseStrategy(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
		}
	}
}

// Every node lands in exactly one wave, in order, and no wave is empty.
func FuzzPlan(f *testing.F) {
	f.Add("canary", 7, 2, 1, 0, 0, 0)
	f.Add("rolling", 5, 0, 0, 3, 2, 0)
	f.Add("all-at-once", 3, 0, 0, 0, 0, 2)
	f.Fuzz(func(t *testing.T, kind string, n, canary, pct, batch, unavail, par int) {
		if n < 0 || n > 200 {
			return
		}
		s, _, err := ParseStrategy(api.Strategy{Kind: kind, Canary: canary, CanaryPercent: pct, BatchSize: batch, MaxUnavailable: unavail, MaxParallel: par})
		if err != nil {
			return
		}
		var nodes []string
		for i := 0; i < n; i++ {
			nodes = append(nodes, fmt.Sprint("n", i))
		}
		var got []string
		for _, w := range Plan(s, nodes) {
			if len(w.Nodes) == 0 {
				t.Fatalf("empty wave in %+v", s)
			}
			for _, x := range w.Nodes {
				got = append(got, x.Name)
			}
		}
		if !reflect.DeepEqual(got, nodes) && !(len(got) == 0 && len(nodes) == 0) {
			t.Fatalf("%+v: nodes %v in waves as %v", s, nodes, got)
		}
	})
}
