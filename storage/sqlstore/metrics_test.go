package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// storeErrors reads threepidd_store_errors_total.
func storeErrors(t *testing.T) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "threepidd_store_errors_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("threepidd_store_errors_total is not registered")
	return 0
}

// TestStoreErrorsCounted: answers (not found, conflict) are not errors; a
// database that is gone is.
func TestStoreErrorsCounted(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			s, err := backend.Open(ctx, b.Driver, b.DSN)
			if err != nil {
				t.Fatal(err)
			}
			before := storeErrors(t)
			a := storage.Association{UserID: "@u:hs", Medium: "email", Address: "m@hs"}
			if err := s.InsertAssociation(ctx, a); err != nil {
				t.Fatal(err)
			}
			if err := s.InsertAssociation(ctx, a); !errors.Is(err, storage.ErrConflict) {
				t.Fatalf("duplicate: %v", err)
			}
			if _, err := s.AssociationByAddress(ctx, "email", "none@hs"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing: %v", err)
			}
			if got := storeErrors(t); got != before {
				t.Fatalf("answers counted as errors: %v -> %v", before, got)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AssociationsOf(ctx, "@u:hs"); err == nil {
				t.Fatal("a closed store answered")
			}
			if got := storeErrors(t); got <= before {
				t.Fatalf("a failed query was not counted: %v -> %v", before, got)
			}
		})
	}
}
