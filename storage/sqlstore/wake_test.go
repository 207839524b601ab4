package sqlstore

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestHubSlowSubscriber checks that a blocked subscriber blocks neither
// publishing nor other subscribers, and gets its queued wake-ups, coalesced
// and in order, once it resumes.
func TestHubSlowSubscriber(t *testing.T) {
	h := newHub()
	defer h.close()
	ctx := t.Context()

	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := make(chan string, 16)
	h.subscribe(ctx, func(u string) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		slow <- u
	})
	fast := make(chan string, 16)
	h.subscribe(ctx, func(u string) { fast <- u })

	h.publishOne("@a:hs")
	<-entered // the slow subscriber is now stuck in its callback
	for _, u := range []string{"@b:hs", "@a:hs", "@c:hs", "@b:hs"} {
		h.publishOne(u) // must not block
	}
	// The fast subscriber gets everything meanwhile (repeats may coalesce).
	for u := ""; u != "@c:hs"; {
		u = receive(t, fast)
	}

	close(release)
	var got []string
	for range 4 {
		got = append(got, receive(t, slow))
	}
	if want := []string{"@a:hs", "@b:hs", "@a:hs", "@c:hs"}; !slices.Equal(got, want) {
		t.Errorf("slow subscriber got %v, want %v", got, want)
	}
}

// TestHubEnds checks that nothing is delivered once a subscription's context
// ended or the hub closed, and that subscribing to a closed hub does nothing.
func TestHubEnds(t *testing.T) {
	h := newHub()
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan string, 1)
	h.subscribe(ctx, func(u string) { ended <- u })
	cancel()
	live := make(chan string, 1)
	h.subscribe(context.Background(), func(u string) { live <- u })
	h.publishOne("@a:hs")
	if u := receive(t, live); u != "@a:hs" {
		t.Fatalf("live subscriber woken for %s", u)
	}
	h.close()
	h.subscribe(context.Background(), func(u string) { live <- u })
	h.publishOne("@b:hs")
	select {
	case u := <-ended:
		t.Errorf("ended subscription woken for %s", u)
	case u := <-live:
		t.Errorf("woken for %s after close", u)
	default:
	}
}

func receive(t *testing.T, c <-chan string) string {
	t.Helper()
	select {
	case u := <-c:
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up")
		return ""
	}
}
