package activation

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestLimiterTotalAndPerSource(t *testing.T) {
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("::ffff:203.0.113.5")
	l := &Limiter{Total: 3, PerSource: 2}
	ctx := context.Background()
	r1, err := l.Acquire(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, a); err != nil {
		t.Fatal(err)
	}
	var le *LimitError
	if _, err := l.Acquire(ctx, a); !errors.As(err, &le) || !le.PerSource || le.Limit != 2 {
		t.Fatalf("third from one address: %v, want the per-source limit of 2", err)
	}
	if got := le.Error(); got != "max connections (2) reached -- try again later" {
		t.Fatalf("text %q is not rsyncd's", got)
	}
	if _, err := l.Acquire(ctx, b); err != nil {
		t.Fatalf("another address under the total: %v", err)
	}
	if _, err := l.Acquire(ctx, netip.MustParseAddr("203.0.113.5")); !errors.As(err, &le) || le.PerSource || le.Limit != 3 {
		t.Fatalf("fourth overall: %v, want the total of 3", err)
	}
	r1()
	r1() // twice is once
	if _, err := l.Acquire(ctx, b); err != nil {
		t.Fatalf("after a release (a v4-mapped address counts as its v4 one): %v", err)
	}
	if _, err := l.Acquire(ctx, b); err == nil {
		t.Fatal("the released slot was counted twice")
	}
}

func TestLimiterWaitsForASlot(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.1")
	l := &Limiter{Total: 1, Wait: 2 * time.Second}
	r, err := l.Acquire(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(100*time.Millisecond, r)
	start := time.Now()
	if _, err := l.Acquire(context.Background(), a); err != nil {
		t.Fatalf("waiting for the released slot: %v", err)
	}
	if d := time.Since(start); d < 80*time.Millisecond || d > time.Second {
		t.Fatalf("got the slot after %v, want about 100ms", d)
	}
	l.Wait = 50 * time.Millisecond
	start = time.Now()
	if _, err := l.Acquire(context.Background(), a); err == nil || time.Since(start) < 40*time.Millisecond {
		t.Fatalf("over the limit: err %v after %v, want a LimitError after the wait", err, time.Since(start))
	}
}
