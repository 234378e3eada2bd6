package phase

import (
	"log/slog"
	"testing"
	"time"
)

type observed struct {
	names []string
	total time.Duration
}

func (o *observed) ObservePhase(name string, d time.Duration) {
	o.names = append(o.names, name)
	o.total += d
}

func TestTimer(t *testing.T) {
	obs := &observed{}
	tm := Start(obs)
	tm.Mark("persist")
	// A step of two parts that ran at once: the parts, not the step.
	tm.Add("infra", 30*time.Millisecond)
	tm.Add("network", 20*time.Millisecond)
	tm.Mark("infra+network")
	tm.Mark("ready")

	want := []string{"persist", "infra", "network", "ready"}
	if len(obs.names) != len(want) {
		t.Fatalf("observed %v, want %v", obs.names, want)
	}
	for i := range want {
		if obs.names[i] != want[i] {
			t.Errorf("observed %v, want %v", obs.names, want)
		}
	}
	if obs.total < 50*time.Millisecond {
		t.Errorf("observed %v in all, want the parts' 50ms at least", obs.total)
	}
	attrs := tm.Attrs()
	if len(attrs) != 5 || attrs[4].(slog.Attr).Key != "total" {
		t.Errorf("attrs = %v, want the 4 steps and total", attrs)
	}
}

func TestTimerWithoutObserver(t *testing.T) {
	tm := Start(nil)
	tm.Mark("a")
	tm.Add("b", time.Millisecond)
	if got := len(tm.Attrs()); got != 3 {
		t.Errorf("%d attrs, want 3", got)
	}
}
