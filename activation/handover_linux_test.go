package activation

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestInheritEnv(t *testing.T) {
	os.Unsetenv(HandoverEnv)
	if src, err := Inherit(); src != nil || err != nil {
		t.Fatalf("no hand-over: got %v, %v", src, err)
	}
	for _, v := range []string{"", "12", "x:1", "12:0", "-1:1", "12:999"} {
		t.Setenv(HandoverEnv, v)
		src, err := Inherit()
		if src != nil || err == nil || !strings.Contains(err.Error(), "want PID:N") {
			t.Errorf("%s=%q: got %v, %v", HandoverEnv, v, src, err)
		}
		if _, ok := os.LookupEnv(HandoverEnv); ok {
			t.Errorf("%s=%q is still set: rsync would inherit it", HandoverEnv, v)
		}
	}
}

// TestServeHold: while Hold says so the loop does not exit idle, and the
// idle time counts from when it stopped holding.
func TestServeHold(t *testing.T) {
	var held atomic.Bool
	held.Store(true)
	time.AfterFunc(400*time.Millisecond, func() { held.Store(false) })
	start := time.Now()
	Serve(context.Background(), nil, LoopConfig{ExitIdle: 200 * time.Millisecond, Hold: held.Load}, nil)
	if d := time.Since(start); d < 550*time.Millisecond || d > 3*time.Second {
		t.Fatalf("exited idle after %v, want about 400ms of hold plus 200ms idle", d)
	}
}
