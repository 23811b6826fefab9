package config

import (
	"testing"
	"time"
)

func TestTargetGroups(t *testing.T) {
	tests := []struct {
		name, file string
		wantErr    string
	}{
		{"none", "", ""},
		{"one", "[[target_group]]\ntarget = \"role=db,env=prod\"\nwindows = [\"Sat 01:00-05:00 Europe/Berlin\"]\n", ""},
		{"every node", "[[target_group]]\ntarget = \"\"\nwindows = [\"* 22:00-06:00 UTC\"]\n", ""},
		{"same group twice", "[[target_group]]\ntarget = \"role=db,env=prod\"\nwindows = [\"Sat 01:00-05:00 UTC\"]\n[[target_group]]\ntarget = \" env=prod , role=db\"\nwindows = [\"Sun 01:00-05:00 UTC\"]\n",
			`target_group[1].target: " env=prod , role=db" is the same group as target_group[0]`},
		{"bad selector", "[[target_group]]\ntarget = \"role\"\nwindows = [\"Sat 01:00-05:00 UTC\"]\n", "target_group[0].target: "},
		{"no windows", "[[target_group]]\ntarget = \"role=db\"\n", "target_group[0].windows: required"},
		{"unknown zone", "[[target_group]]\ntarget = \"role=db\"\nwindows = [\"Sat 01:00-05:00 Europe/Berln\"]\n",
			`target_group[0].windows[0]: window "Sat 01:00-05:00 Europe/Berln": unknown time zone "Europe/Berln"`},
		{"unknown key", "[[target_group]]\ntarget = \"role=db\"\nwindow = [\"Sat 01:00-05:00 UTC\"]\n", "window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadText(t, tt.file)
			checkErr(t, err, tt.wantErr)
		})
	}
}

func TestGroupWindowsByCanonicalSelector(t *testing.T) {
	c, err := loadText(t, "[[target_group]]\ntarget = \"role=db, env=prod\"\nwindows = [\"Sat 01:00-05:00 UTC\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.GroupWindows()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := m["env=prod,role=db"]
	if !ok || len(m) != 1 {
		t.Fatalf("GroupWindows = %v, want the key env=prod,role=db", m)
	}
	sat := time.Date(2026, 12, 12, 2, 0, 0, 0, time.UTC)
	if !s.Open(sat) || s.Open(sat.Add(24*time.Hour)) {
		t.Fatalf("windows %s: open Saturday 02:00 %v, Sunday 02:00 %v", s, s.Open(sat), s.Open(sat.Add(24*time.Hour)))
	}
}
