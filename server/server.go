// Package server wires threepidd together from its configuration: the store,
// the services, the HTTP handlers and listeners, and the background workers.
// The binary (cmd/threepidd) and the end-to-end tests both start it through [New].
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/admin"
	"github.com/threepidd/threepidd/api"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/federation/onupdate"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/homeserver/deactivation"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	tpsync "github.com/threepidd/threepidd/sync"
)

// ShutdownTimeout bounds how long in-flight requests may finish after a stop.
const ShutdownTimeout = 10 * time.Second

// Server is a running threepidd.
type Server struct {
	cfg      *config.Config
	Store    storage.Store
	Account  *account.Service
	Bindings *bindings.Service
	OnUpdate *onupdate.Service

	// hsWorkers are the homeserver integration's outbox workers (mirror,
	// deactivation cleanups), built by build.
	hsWorkers []*outbox.Worker

	listener, metricsListener net.Listener
	http, metricsHTTP         *http.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the store, builds the services and binds the listeners. Serve
// starts answering.
func New(ctx context.Context, cfg *config.Config) (*Server, error) {
	s := &Server{cfg: cfg}
	var err error
	s.listener, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if cfg.PublicBaseURL == "" {
		cfg.PublicBaseURL = "http://" + s.listener.Addr().String()
	}
	if cfg.MetricsListen != "" {
		if s.metricsListener, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			s.listener.Close()
			return nil, fmt.Errorf("listen on %s (metrics_listen): %w", cfg.MetricsListen, err)
		}
	}
	s.Store, err = backend.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
	if err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("open database: %w", err)
	}
	handler, err := s.build()
	if err != nil {
		s.closeListeners()
		s.Store.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if s.metricsListener != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		s.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return s, nil
}

// build creates the services and the HTTP handler.
func (s *Server) build() (http.Handler, error) {
	cfg := s.cfg
	hsTransport := homeserver.NewTransport()
	hs, err := homeserver.New(cfg.Homeserver, hsTransport)
	if err != nil {
		return nil, err
	}
	proxies, err := api.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("trusted_proxies: %w", err)
	}
	auth := &api.Auth{Homeserver: hs, TrustedProxies: proxies}
	// Identity servers, webhooks and the SMS gateway: a pooled transport of
	// their own (Go's default keeps 2 idle connections per host, which under
	// load piles sockets up in TIME_WAIT), every call bounded to 10 s.
	outbound := &http.Client{Timeout: 10 * time.Second, Transport: homeserver.NewTransport()}

	s.Account = &account.Service{
		Store:               s.Store,
		PublicBaseURL:       cfg.PublicBaseURL,
		MaxThreepidsPerUser: cfg.Policy.MaxThreepidsPerUser,
	}
	if cfg.EmailEnabled() {
		s.Account.Email = delivery.NewMailer(cfg.Email)
	}
	if cfg.MSISDNEnabled() {
		s.Account.SMS = delivery.NewSMSSender(cfg.MSISDN.WebhookURL, outbound)
	}

	router := api.NewRouter()
	router.Handle("/health", mxerr.Handler(s.health)).Methods(http.MethodGet)
	(&api.Account{
		Service:    s.Account,
		Auth:       auth,
		PerIP:      ratelimit.New(cfg.RateLimit.RequestTokenPerIP),
		PerAddress: ratelimit.New(cfg.RateLimit.RequestTokenPerAddress),
	}).Register(router)

	// Identity servers: bind/unbind (signed with the homeserver key) and onupdate.
	keys := federation.NewKeyRing(outbound)
	var key *signingkey.Key
	if cfg.SigningKeyPath != "" {
		if key, err = signingkey.Load(cfg.SigningKeyPath); err != nil {
			return nil, fmt.Errorf("signing_key_path: %w", err)
		}
	}
	s.Bindings = &bindings.Service{
		Store:    s.Store,
		Identity: identity.NewClient(cfg.ServerName, key, keys, outbound),
		Servers:  cfg.IdentityServers,
	}
	s.Account.Unbinder = s.Bindings
	(&api.Bindings{Service: s.Bindings, Auth: auth}).Register(router)
	s.OnUpdate = &onupdate.Service{Store: s.Store}
	(&onupdate.Handler{
		Service:   s.OnUpdate,
		Verifier:  federation.NewVerifier(cfg.ServerName, cfg.IdentityServers, keys),
		PerServer: ratelimit.New(cfg.RateLimit.OnUpdatePerServer),
	}).Register(router)

	// Policy callbacks, after-events and the admin API.
	checker, err := policy.New(cfg.Policy, outbound)
	if err != nil {
		return nil, err
	}
	var ev bindings.Events = events.New(cfg.Policy.EventsWebhook, outbound)
	synapseAdmin := hs.SynapseAdmin(cfg.Homeserver.AdminToken)
	var hsAdmin *homeserver.SynapseAdmin // deactivation checks: only a Synapse has this API
	if cfg.Homeserver.Kind == config.KindSynapse && cfg.Homeserver.AdminToken != "" {
		hsAdmin = synapseAdmin
	}
	if cfg.Homeserver.Mirror == config.MirrorSynapseAdmin {
		mirror := &homeserver.Mirror{Admin: synapseAdmin, Store: s.Store, Next: ev}
		s.hsWorkers = append(s.hsWorkers, mirror.Worker())
		ev = mirror
	}
	s.Account.Policy, s.Account.Events = checker, ev
	s.Bindings.Policy, s.Bindings.Events = checker, ev
	s.OnUpdate.Events = ev
	adminService := &admin.Service{Store: s.Store, Bindings: s.Bindings, Events: ev}
	(&admin.Handler{
		Service:    adminService,
		Token:      cfg.AdminToken,
		ServerName: cfg.ServerName,
	}).Register(router)
	// The /sync extension: sync and the endpoints taking sync tokens, proxied.
	(&tpsync.Proxy{
		Stream:     tpsync.New(s.Store, tpsync.Options{Retention: cfg.Sync.Retention}),
		Auth:       auth,
		Homeserver: hs,
	}).Register(router)
	// Deactivation: relayed to the homeserver, then threepidd's 3PIDs go.
	deactivate := &deactivation.Service{Homeserver: hs, Admin: hsAdmin, Users: adminService, Store: s.Store}
	(&deactivation.Handler{Service: deactivate, Auth: auth}).Register(router)
	s.hsWorkers = append(s.hsWorkers, deactivate.Worker())
	return api.Wrap(router), nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.Store.Ping(ctx); err != nil {
		slog.WarnContext(ctx, "health: database unreachable", "err", err)
		return &mxerr.Error{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "database unreachable"}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// Addr is the address the API listens on (useful with port 0).
func (s *Server) Addr() string { return s.listener.Addr().String() }

// MetricsAddr is the metrics listener's address, or "" when metrics are off.
func (s *Server) MetricsAddr() string {
	if s.metricsListener == nil {
		return ""
	}
	return s.metricsListener.Addr().String()
}

// Serve answers requests and runs the background workers until ctx ends or
// Shutdown is called.
func (s *Server) Serve(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.startWorkers(ctx)
	errc := make(chan error, 2)
	go func() { errc <- s.http.Serve(s.listener) }()
	if s.metricsHTTP != nil {
		go func() { errc <- s.metricsHTTP.Serve(s.metricsListener) }()
	}
	slog.Info("threepidd listening", "addr", s.Addr(), "metrics", s.MetricsAddr(), "public_baseurl", s.cfg.PublicBaseURL)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	}
}

// Shutdown stops accepting, lets in-flight requests finish (bounded by
// ShutdownTimeout), stops the workers, ends the idle SMTP connections and
// closes the database.
func (s *Server) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := s.http.Shutdown(ctx)
	if s.metricsHTTP != nil {
		_ = s.metricsHTTP.Shutdown(ctx)
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if mailer, ok := s.Account.Email.(io.Closer); ok {
		_ = mailer.Close()
	}
	if cerr := s.Store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (s *Server) closeListeners() {
	s.listener.Close()
	if s.metricsListener != nil {
		s.metricsListener.Close()
	}
}

// every runs fn every interval until ctx ends.
func (s *Server) every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
}

// startWorkers starts the background work: the outbox workers, expiry of old
// sessions and replay hashes.
func (s *Server) startWorkers(ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.Bindings.Worker().Run(ctx)
	}()
	if ev := events.New(s.cfg.Policy.EventsWebhook, nil); ev.Enabled() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ev.Worker(s.Store).Run(ctx)
		}()
	}
	for _, w := range s.hsWorkers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.Run(ctx)
		}()
	}
	s.every(ctx, 10*time.Minute, func(ctx context.Context) {
		now := time.Now()
		if _, err := s.Store.DeleteSessionsExpiredBefore(ctx, now.Add(-account.ValidatedSessionLifetime).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire validation sessions", "err", err)
		}
		if _, err := s.Store.ForgetRequestsBefore(ctx, now.Add(-30*24*time.Hour).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire replay hashes", "err", err)
		}
	})
}
