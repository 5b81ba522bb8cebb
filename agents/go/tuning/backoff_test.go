package tuning

import (
	"context"
	"testing"
	"time"
)

func TestBackoffIsExponentialAndBounded(t *testing.T) {
	b := NewBackoff()
	steps := []time.Duration{200, 400, 800, 1600, 3200, 5000, 5000, 5000}
	for round := 0; round < 2; round++ {
		for i, step := range steps {
			step *= time.Millisecond
			got := b.Next()
			if got > step || got < step*4/5 {
				t.Errorf("round %d delay %d = %v, want in [%v, %v]", round, i, got, step*4/5, step)
			}
		}
		for i := 0; i < 100; i++ {
			if got := b.Next(); got > BackoffMax || got < BackoffMax*4/5 {
				t.Fatalf("after many failures: %v", got)
			}
		}
		b.Reset()
	}
}

func TestBackoffJitterDiffersBetweenInstances(t *testing.T) {
	distinct := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		b := NewBackoff()
		b.Next()
		distinct[b.Next()] = true // 400ms minus up to 80ms
		time.Sleep(time.Microsecond)
	}
	if len(distinct) < 2 {
		t.Errorf("20 agents drew the same delay: no jitter")
	}
}

func TestSleepStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	started := time.Now()
	if sleep(ctx, time.Minute) {
		t.Error("sleep reported a full wait on a cancelled context")
	}
	if time.Since(started) > time.Second {
		t.Error("sleep ignored the cancelled context")
	}
	if !sleep(context.Background(), time.Millisecond) {
		t.Error("sleep of 1ms did not complete")
	}
}
