// Package phase times the steps of one operation for the debug log.
package phase

import (
	"log/slog"
	"time"
)

// Timer records how long each step took since the previous one.
type Timer struct {
	start, last time.Time
	attrs       []any
}

// Start begins timing.
func Start() *Timer {
	now := time.Now()
	return &Timer{start: now, last: now}
}

// Mark ends the step named phase.
func (t *Timer) Mark(phase string) {
	now := time.Now()
	t.attrs = append(t.attrs, slog.Duration(phase, now.Sub(t.last)))
	t.last = now
}

// Attrs are the steps and the total, as slog attributes.
func (t *Timer) Attrs() []any {
	return append(t.attrs, slog.Duration("total", time.Since(t.start)))
}
