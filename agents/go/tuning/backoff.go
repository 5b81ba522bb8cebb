package tuning

import (
	"context"
	"math/rand"
	"time"
)

// Bounds of the retry delay after a failed request.
const (
	BackoffMin = 200 * time.Millisecond
	BackoffMax = 5 * time.Second
)

// Backoff is a bounded exponential retry delay: Min, 2×Min, 4×Min, … up to Max, each
// shortened by up to 20 % of jitter so that many agents that lost the control plane
// at the same moment do not come back in lockstep. Every delay lies in
// [0.8 × step, step] with Min ≤ step ≤ Max. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	step     time.Duration
	rng      *rand.Rand
}

// NewBackoff returns a Backoff from BackoffMin to BackoffMax.
func NewBackoff() *Backoff {
	return &Backoff{Min: BackoffMin, Max: BackoffMax}
}

// Next returns the delay before the next retry and doubles the following one.
func (b *Backoff) Next() time.Duration {
	if b.step < b.Min {
		b.step = b.Min
	}
	if b.step > b.Max {
		b.step = b.Max
	}
	delay := b.step
	b.step *= 2
	if b.step > b.Max || b.step <= 0 {
		b.step = b.Max
	}
	if b.rng == nil {
		// Go < 1.20 seeds the global source with 1: every process would draw the
		// same "jitter".
		b.rng = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	if jitter := int64(delay / 5); jitter > 0 {
		delay -= time.Duration(b.rng.Int63n(jitter + 1))
	}
	return delay
}

// Reset starts the next failure series from Min again (after a success).
func (b *Backoff) Reset() {
	b.step = 0
}

// sleep waits d or until ctx is done; false when ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
