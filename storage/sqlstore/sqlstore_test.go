package sqlstore_test

import (
	"fmt"
	"testing"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// TestConformance runs the storage conformance suite on every backend.
func TestConformance(t *testing.T) {
	storagetest.TestSuite(t)
}

// BenchmarkStore measures the per-call cost of typical reads and writes, to
// compare with bare database/sql doing the same query.
func BenchmarkStore(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		s := storagetest.Open(b, be)
		ctx := b.Context()
		for i := range 3 {
			a := storage.Association{UserID: "@u:hs", Medium: "email", Address: fmt.Sprintf("%d@hs", i)}
			if err := s.InsertAssociation(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(be.Name+"/AssociationsOf", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if as, err := s.AssociationsOf(ctx, "@u:hs"); err != nil || len(as) != 3 {
						b.Fatal(as, err)
					}
				}
			})
		})
		b.Run(be.Name+"/AssociationByAddress", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.AssociationByAddress(ctx, "email", "1@hs"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
		b.Run(be.Name+"/RememberRequest", func(b *testing.B) {
			for i := range b.N {
				if _, err := s.RememberRequest(ctx, fmt.Sprint(i), 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
