package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	tpsync "github.com/threepidd/threepidd/sync"
)

// A homeserver written in Go adds the section to its own /sync responses:
// one Stream for the process, then, in the /sync handler, ParseToken on the
// client's since, Wait (or Section for a client that does not long-poll), and
// NewToken around its own next_batch.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "tpsync-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := backend.Open(ctx, backend.SQLite, filepath.Join(dir, "threepidd.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// Once per process.
	stream := tpsync.New(store, tpsync.Options{Retention: 7 * 24 * time.Hour})
	defer stream.Close()

	// An identity server reports that @bob took alice's address over
	// (package onupdate appends this when it applies an onupdate).
	if _, err := store.AppendNotification(ctx, storage.Notification{
		UserID: "@alice:example.org", Medium: "email", Address: "alice@example.org",
		MXID: "@bob:other.example", Origin: "id.example", At: time.Now().UnixMilli(),
	}); err != nil {
		log.Fatal(err)
	}

	// In the /sync handler. The client's since: "" on a first sync, else the
	// next_batch we gave it; a 400 M_INVALID_PARAM error when garbled.
	since, err := tpsync.ParseToken("")
	if err != nil {
		log.Fatal(err) // answer it: it is an *mxerr.Error
	}
	// since.Upstream is the homeserver's own token. Wait long-polls until the
	// client's timeout: the homeserver's own wait can run under a context from
	// stream.Watch instead, which ends when a notification comes.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	sec, next, err := stream.Wait(wctx, "@alice:example.org", since)
	if err != nil {
		log.Fatal(err)
	}
	homeserverNextBatch := "s123"
	body, err := json.Marshal(struct {
		NextBatch string         `json:"next_batch"`
		Threepids tpsync.Section `json:"threepids,omitempty"`
	}{tpsync.NewToken(homeserverNextBatch, next).String(), sec})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(body))

	// The client's next sync comes back with that token.
	since, _ = tpsync.ParseToken(tpsync.NewToken(homeserverNextBatch, next).String())
	fmt.Println(since.Upstream, since.Pos)
	// Output:
	// {"next_batch":"tpd1.1.czEyMw","threepids":{"alice@example.org":{"deleted":false,"mxid":"@bob:other.example","medium":"email"}}}
	// s123 1
}

// A proxy splices the section into the homeserver's body without decoding
// it; the rest of the body is kept byte for byte.
func ExampleSpliceSync() {
	upstream := []byte(`{"next_batch":"s124","rooms":{"join":{}}}`)
	sec := tpsync.Section{"alice@example.org": {Deleted: true, MXID: "@alice:example.org", Medium: "email"}}
	spliced, err := tpsync.SpliceSync(upstream, sec, 2)
	if err != nil {
		log.Fatal(err) // not a sync body: send it unchanged
	}
	// Set Content-Length to spliced.Len(), then spliced.WriteTo(w).
	_, _ = spliced.WriteTo(os.Stdout)
	// Output: {"next_batch":"tpd1.2.czEyNA","rooms":{"join":{}},"threepids":{"alice@example.org":{"deleted":true,"mxid":"@alice:example.org","medium":"email"}}}
}
