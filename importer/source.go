package importer

import (
	"errors"
	"fmt"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/outbound"
)

// SourceFor returns the Source for cfg's homeserver: for kind synapse its
// admin API (homeserver.admin_token is required), for kind dendrite its user
// API database at dendriteDSN (required). Close it after use.
func SourceFor(cfg *config.Config, dendriteDSN string) (Source, error) {
	switch cfg.Homeserver.Kind {
	case config.KindDendrite:
		if dendriteDSN == "" {
			return nil, errors.New("homeserver.kind is dendrite: -dendrite-db (the user API database: a SQLite file or postgres:// URL) is required")
		}
		return OpenDendrite(dendriteDSN, cfg.ServerName)
	case config.KindSynapse:
		if dendriteDSN != "" {
			return nil, errors.New("-dendrite-db is only for homeserver.kind dendrite")
		}
		if cfg.Homeserver.AdminToken == "" {
			return nil, errors.New("homeserver.admin_token is required to import from Synapse (its admin API)")
		}
		hs, err := homeserver.New(cfg.Homeserver, outbound.NewTransport())
		if err != nil {
			return nil, err
		}
		return &Synapse{Admin: hs.SynapseAdmin(cfg.Homeserver.AdminToken), URL: cfg.Homeserver.URL}, nil
	}
	return nil, fmt.Errorf("homeserver.kind %q: no import source", cfg.Homeserver.Kind)
}
