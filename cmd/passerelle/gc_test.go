package main

import (
	"context"
	"runtime/metrics"
	"testing"
	"time"
)

// TestIdleWatch: memory is given back once after each burst, at the
// first quiet tick, and never while the gateway stays busy or stays quiet.
func TestIdleWatch(t *testing.T) {
	const burst, trickle = 4 * idleAllocs, idleAllocs / 4
	var w idleWatch
	var total uint64
	for i, step := range []struct {
		alloc   uint64
		release bool
	}{
		{0, false},       // quiet from the start
		{trickle, false}, // a trickle is quiet
		{burst, false},   // busy
		{burst, false},   // still busy
		{trickle, true},  // the first quiet tick after the burst
		{0, false},       // quiet: nothing more to give back
		{trickle, false},
		{burst, false},
		{0, true}, // the second burst ends
		{0, false},
	} {
		total += step.alloc
		if got := w.tick(total); got != step.release {
			t.Fatalf("tick %d (%d bytes allocated): release %v, want %v", i, step.alloc, got, step.release)
		}
	}
}

// TestReleaseWhenIdleGivesMemoryBack: after a burst of allocation, the
// free heap is returned to the system within a few ticks.
func TestReleaseWhenIdleGivesMemoryBack(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the idle ticks")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); releaseWhenIdle(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(idleTick + idleTick/2) // the release after start-up is done

	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	time.Sleep(idleTick / 2) // between ticks
	var keep [][]byte
	for range 200 {
		keep = append(keep, make([]byte, 64<<10)) // 12.5 MB within one tick
	}
	keep = nil
	before := released()
	deadline := time.Now().Add(5 * idleTick)
	for released() < before+8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("released %d bytes after the burst, want at least 8 MB", released()-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = keep
}

// TestIdleWatchStartUp: the watch releaseWhenIdle starts with counts
// start-up as a burst, so the first quiet tick gives its garbage back.
func TestIdleWatchStartUp(t *testing.T) {
	w := idleWatch{last: 1 << 30, pending: true}
	if !w.tick(1<<30 + 1024) {
		t.Fatal("no release at the first quiet tick after start-up")
	}
	if w.tick(1<<30 + 2048) {
		t.Fatal("a second release without a burst")
	}
}
