package sync

import (
	"context"
	"errors"
	"testing"
)

func TestHub(t *testing.T) {
	h := NewHub()
	ctx := context.Background()
	a1, stopA1 := h.Watch(ctx, "@a:hs")
	a2, stopA2 := h.Watch(ctx, "@a:hs")
	a3, stopA3 := h.Watch(ctx, "@a:hs")
	b1, stopB1 := h.Watch(ctx, "@b:hs")
	defer stopB1()
	if n := h.Waiting(); n != 4 {
		t.Fatalf("Waiting = %d, want 4", n)
	}
	stopA2() // from the middle of a's list
	if !errors.Is(context.Cause(a2), context.Canceled) || h.Waiting() != 3 {
		t.Fatalf("stopped watch: cause %v, waiting %d", context.Cause(a2), h.Waiting())
	}
	h.Wake("@c:hs") // nobody
	h.Wake("@a:hs")
	for i, c := range []context.Context{a1, a3} {
		if !errors.Is(context.Cause(c), ErrWoken) {
			t.Errorf("watcher %d of a: cause %v, want ErrWoken", i, context.Cause(c))
		}
	}
	if b1.Err() != nil {
		t.Fatal("b was woken by a's notification")
	}
	if n := h.Waiting(); n != 1 {
		t.Fatalf("Waiting = %d after the wake, want 1", n)
	}
	stopA1()
	stopA3() // stopping a woken watcher changes nothing
	if n := h.Waiting(); n != 1 {
		t.Fatalf("Waiting = %d, want 1", n)
	}
	a4, stopA4 := h.Watch(ctx, "@a:hs")
	defer stopA4()
	if a4.Err() != nil {
		t.Fatal("a watcher registered after a wake starts woken")
	}
}

func TestHubParentContext(t *testing.T) {
	h := NewHub()
	parent, cancel := context.WithCancel(context.Background())
	wctx, stop := h.Watch(parent, "@a:hs")
	cancel()
	<-wctx.Done()
	if errors.Is(context.Cause(wctx), ErrWoken) {
		t.Fatal("a cancelled parent reads as a wake")
	}
	stop()
	if n := h.Waiting(); n != 0 {
		t.Fatalf("Waiting = %d after stop", n)
	}
}

func TestHubDrain(t *testing.T) {
	h := NewHub()
	ctx := context.Background()
	a, stopA := h.Watch(ctx, "@a:hs")
	defer stopA()
	b, stopB := h.Watch(ctx, "@b:hs")
	defer stopB()
	h.Drain()
	for i, c := range []context.Context{a, b} {
		if !errors.Is(context.Cause(c), ErrDraining) {
			t.Errorf("watcher %d: cause %v, want ErrDraining", i, context.Cause(c))
		}
	}
	later, stopLater := h.Watch(ctx, "@a:hs")
	defer stopLater()
	if !errors.Is(context.Cause(later), ErrDraining) || h.Waiting() != 0 {
		t.Fatalf("a watch after the drain: cause %v, %d waiting", context.Cause(later), h.Waiting())
	}
}
