// Package phase times the steps of one operation, for the debug log and
// for an Observer (Prometheus histograms in internal/metrics).
package phase

import (
	"log/slog"
	"time"
)

// Observer is told each step's duration as the step ends.
type Observer interface {
	ObservePhase(name string, d time.Duration)
}

// Timer records how long each step took.
type Timer struct {
	obs         Observer
	start, last time.Time
	attrs       []any
	// parts is set when Add recorded the parts of the current step.
	parts bool
}

// Start begins timing; obs, when not nil, is told each step.
func Start(obs Observer) *Timer {
	now := time.Now()
	return &Timer{obs: obs, start: now, last: now}
}

// Mark ends the step named phase: it took the time since the previous
// Mark. A step whose parts were recorded with Add is not recorded again.
func (t *Timer) Mark(phase string) {
	now := time.Now()
	if !t.parts {
		t.record(phase, now.Sub(t.last))
	}
	t.parts = false
	t.last = now
}

// Add records a part of the current step timed on its own, such as one of
// two that run at once.
func (t *Timer) Add(phase string, d time.Duration) {
	t.parts = true
	t.record(phase, d)
}

func (t *Timer) record(phase string, d time.Duration) {
	t.attrs = append(t.attrs, slog.Duration(phase, d))
	if t.obs != nil {
		t.obs.ObservePhase(phase, d)
	}
}

// Attrs are the steps and the total, as slog attributes.
func (t *Timer) Attrs() []any {
	return append(t.attrs, slog.Duration("total", time.Since(t.start)))
}
