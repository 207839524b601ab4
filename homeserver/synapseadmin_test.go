package homeserver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/tests/fakes"
)

const hsAdminToken = "syt_hs_admin"

func TestSynapseAdminListAndGet(t *testing.T) {
	hs := fakes.NewHomeserver(t, "hs.test")
	admin := hs.AdminClient(hsAdminToken)
	ctx := context.Background()
	var want []string
	for i := range 5 {
		want = append(want, hs.AddUser(fmt.Sprintf("u%d", i), "pw"))
	}
	hs.AddGuest()
	var got []string
	from := ""
	for range 10 {
		page, err := admin.ListUsers(ctx, from, 2)
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != 5 {
			t.Fatalf("total %d, want 5 (guests excluded)", page.Total)
		}
		for _, u := range page.Users {
			got = append(got, u.Name)
		}
		if page.Next == "" {
			break
		}
		from = page.Next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}

	hs.SetThreepids(want[0], []fakes.HomeserverThreepid{{Medium: "email", Address: "u0@example.org", ValidatedAt: 5, AddedAt: 6}})
	u, err := admin.User(ctx, want[0])
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != want[0] || u.Deactivated || !slices.Equal(u.Threepids, []homeserver.SynapseThreepid{{Medium: "email", Address: "u0@example.org", ValidatedAt: 5, AddedAt: 6}}) {
		t.Fatalf("user %+v", u)
	}
	if _, err := admin.User(ctx, "@nobody:hs.test"); !errors.Is(err, homeserver.ErrUserNotFound) {
		t.Fatalf("unknown user: %v", err)
	}

	wrong, _ := homeserver.New(config.Homeserver{URL: hs.URL(), Kind: config.KindSynapse}, outbound.NewTransport())
	_, err = wrong.SynapseAdmin("not-the-token").ListUsers(ctx, "", 10)
	var ae *homeserver.AdminError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || !homeserver.TemporaryAdminError(err) {
		t.Fatalf("wrong token: %v", err)
	}
}

// recorder is an Events that records the changes handed on to it.
