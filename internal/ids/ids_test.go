package ids

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestFind(t *testing.T) {
	byID := map[string]int{"abc123": 1, "abd456": 2, "ffff00": 3}
	tests := []struct {
		id      string
		want    int
		wantErr func(error) bool
	}{
		{id: "abc123", want: 1},
		{id: "abc", want: 1},
		{id: "f", want: 3},
		{id: "ab", wantErr: errdefs.IsInvalidArgument},
		{id: "", wantErr: errdefs.IsInvalidArgument},
		{id: "zz", wantErr: errdefs.IsNotFound},
	}
	for _, tt := range tests {
		got, err := Find(byID, tt.id, "thing")
		if tt.wantErr != nil {
			if !tt.wantErr(err) {
				t.Errorf("Find(%q) = %v, %v", tt.id, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Find(%q) = %v, %v; want %v", tt.id, got, err, tt.want)
		}
	}
	if a, b := New(), New(); len(a) != 64 || a == b {
		t.Errorf("New() = %q, %q", a, b)
	}
}
