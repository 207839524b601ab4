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

	"github.com/gorilla/mux"
	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/adminapi"
	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/clientapi"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/federationapi"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/reconcile"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/sync/proxy"
)

// ShutdownTimeout bounds how long in-flight requests may finish after a stop.
const ShutdownTimeout = 10 * time.Second

// outboundTimeout bounds every call to an identity server, a webhook or the
// SMS gateway.
const outboundTimeout = 10 * time.Second

// Server is a running threepidd.
type Server struct {
	cfg      *config.Config
	Store    storage.Store
	Account  *account.Service
	Bindings *bindings.Service
	OnUpdate *onupdate.Service
	// Reconciler keeps Synapse's 3PID table and the store in step; nil
	// without Synapse's admin API (kind dendrite, or no admin_token).
	Reconciler *reconcile.Reconciler
	// Events is the events webhook (off without policy.events_webhook.url).
	Events *events.Webhook

	// workers run in the background from Serve until Shutdown.
	workers []worker
	// stream is the /sync notification stream, drained by Shutdown.
	stream *tpsync.Stream

	listener, metricsListener net.Listener
	http, metricsHTTP         *http.Server
	// drain closes the API's connections without crossing a request.
	drain drainer

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// worker is background work: an outbox worker or a periodic job.
type worker interface {
	Run(ctx context.Context)
}

// New opens the store, builds the services and binds the listeners. Serve
// starts answering.
func New(ctx context.Context, cfg *config.Config) (*Server, error) {
	s := &Server{cfg: cfg, drain: drainer{quiet: drainQuiet, grace: drainGrace}}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s.listener = &onceCloseListener{Listener: ln}
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
		Handler:           s.drain.wrap(handler),
		ConnState:         s.drain.connState,
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

// Open builds every service from cfg on its store, without listeners or
// background workers: for the subcommands that work beside a serving
// instance (threepidd reconcile). Close releases it.
func Open(ctx context.Context, cfg *config.Config) (*Server, error) {
	s := &Server{cfg: cfg}
	var err error
	if s.Store, err = backend.Open(ctx, cfg.Database.Driver, cfg.Database.DSN); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if _, err := s.build(); err != nil {
		s.Store.Close()
		return nil, err
	}
	return s, nil
}

// build constructs every service from the config, then registers the
// routes, then lists the background workers. Nothing is changed once built.
func (s *Server) build() (http.Handler, error) {
	cfg := s.cfg
	hs, err := homeserver.New(cfg.Homeserver, outbound.NewTransport())
	if err != nil {
		return nil, err
	}
	proxies, err := httpapi.ParseProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("trusted_proxies: %w", err)
	}
	var key *signingkey.Key
	if cfg.SigningKeyPath != "" {
		if key, err = signingkey.Load(cfg.SigningKeyPath); err != nil {
			return nil, fmt.Errorf("signing_key_path: %w", err)
		}
	}
	// Identity servers, webhooks and the SMS gateway: a pooled transport of
	// their own, separate from the homeserver's.
	out := outbound.NewClient(outbound.NewTransport(), outboundTimeout)
	checker, err := policy.New(cfg.Policy, out)
	if err != nil {
		return nil, err
	}

	// After-events: the changes metric, the events webhook, and the Synapse mirror.
	s.Events = events.NewWebhook(cfg.Policy.EventsWebhook, s.Store, out)
	sinks := events.Sinks{events.Counter{}, s.Events}
	var mirror *events.Mirror
	if cfg.Homeserver.Mirror == config.MirrorSynapseAdmin {
		mirror = &events.Mirror{Admin: hs.SynapseAdmin(cfg.Homeserver.AdminToken), Store: s.Store}
		sinks = events.Sinks{events.Counter{}, mirror, s.Events}
	}
	var hsAdmin *homeserver.SynapseAdmin // only a Synapse has this API
	if cfg.SynapseAdmin() {
		hsAdmin = hs.SynapseAdmin(cfg.Homeserver.AdminToken)
	}

	// The services.
	keys := federation.NewKeyRing(out)
	s.Bindings = &bindings.Service{
		Store:    s.Store,
		Identity: identity.NewClient(cfg.ServerName, key, keys, out),
		Servers:  cfg.IdentityServers,
		Policy:   checker,
		Events:   sinks,
	}
	if key != nil {
		// Identity servers clients name (Discovery): only through the
		// guard, with a key ring of their own so that they cannot push the
		// configured servers' keys out of the cache. Unbinds need our key.
		if s.Bindings.Named, err = namedIdentityServers(cfg, key); err != nil {
			return nil, err
		}
	}
	s.Account = &account.Service{
		Store:         s.Store,
		PublicBaseURL: cfg.PublicBaseURL,
		ServerName:    cfg.ServerName,
		Limits: account.Limits{
			EmailTokenLifetime:       cfg.Email.TokenLifetime,
			MSISDNTokenLifetime:      cfg.MSISDN.TokenLifetime,
			ValidatedSessionLifetime: cfg.ValidatedSessionLifetime,
			AttemptsPerLifetime:      cfg.RateLimit.TokenAttemptsPerLifetime,
			AttemptsPerDay:           cfg.RateLimit.TokenAttemptsPerDay,
		},
		NextLinkDomains:       cfg.Email.NextLinkDomainsAllowed,
		InhibitThreepidErrors: cfg.Policy.RequestTokenInhibit3PIDErrors,
		Policy:                checker,
		MaxThreepidsPerUser:   cfg.Policy.MaxThreepidsPerUser,
		Unbinder:              s.Bindings,
		Events:                sinks,
		Homeserver:            hs,
		HomeserverAdmin:       hsAdmin,
	}
	if hsAdmin != nil {
		s.Account.Holders = hsAdmin
	}
	if cfg.EmailEnabled() {
		if s.Account.Templates, err = delivery.LoadTemplates(cfg.Email); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		s.Account.Email = delivery.NewMailer(cfg.Email, cfg.ServerName)
	}
	if cfg.MSISDNEnabled() {
		s.Account.SMS = delivery.NewSMSSender(cfg.MSISDN.WebhookURL, out)
	}
	s.OnUpdate = &onupdate.Service{Store: s.Store, Bindings: s.Bindings, MaxAge: cfg.OnUpdate.MaxAge, ClockSkew: cfg.OnUpdate.ClockSkew}
	var readThrough *reconcile.ReadThrough
	if hsAdmin != nil {
		s.Reconciler = &reconcile.Reconciler{Store: s.Store, Admin: hsAdmin, Mirror: mirror, Deactivator: s.Account,
			Interval: cfg.Homeserver.ReconcileInterval}
		readThrough = reconcile.NewReadThrough(s.Reconciler)
	}
	logWhatStopsWorking(cfg)
	stream := tpsync.New(s.Store, tpsync.Options{Retention: cfg.Sync.Retention})
	s.stream = stream

	// The routes.
	authn := &auth.Auth{Homeserver: hs, Proxies: proxies}
	unbindPerUser := ratelimit.New(s.Store, "unbind_per_user", cfg.RateLimit.UnbindPerUser) // /3pid/unbind and /3pid/delete together
	if readThrough != nil {
		authn.Seen = readThrough
	}
	routes := router.NewRouter()
	ready := &readiness{store: s.Store, hs: hs}
	routes.Handle("/health", mxerr.Handler(s.health)).Methods(http.MethodGet)
	routes.Handle("/ready", mxerr.Handler(ready.serve)).Methods(http.MethodGet)
	for _, h := range []interface{ Register(*mux.Router) }{
		// The /sync proxy first: gorilla/mux tries the routes in order, and
		// /sync is what every client calls over and over.
		&proxy.Proxy{Stream: stream, Auth: authn, Homeserver: hs, Budget: proxy.NewBudget(cfg.Sync.SpliceBudgetBytes)},
		&clientapi.Account{
			Service:       s.Account,
			Auth:          authn,
			PerIP:         ratelimit.New(s.Store, "requesttoken_per_ip", cfg.RateLimit.RequestTokenPerIP),
			PerAddress:    ratelimit.New(s.Store, "requesttoken_per_address", cfg.RateLimit.RequestTokenPerAddress),
			UnbindPerUser: unbindPerUser,
		},
		&clientapi.Bindings{Service: s.Bindings, Auth: authn, UnbindPerUser: unbindPerUser},
		&clientapi.Deactivate{Service: s.Account, Auth: authn},
		&clientapi.Capabilities{Homeserver: hs, Auth: authn, ThreepidChanges: cfg.ThreepidChanges()},
		&federationapi.OnUpdate{
			Service:   s.OnUpdate,
			Verifier:  federation.NewVerifier(cfg.ServerName, cfg.IdentityServers, keys, proxies),
			PerServer: ratelimit.New(s.Store, "onupdate_per_server", cfg.RateLimit.OnUpdatePerServer),
		},
		&adminapi.Handler{Account: s.Account, Bindings: s.Bindings, Token: cfg.AdminToken, ServerName: cfg.ServerName},
	} {
		h.Register(routes)
	}

	// The background workers.
	s.workers = []worker{s.Bindings.Worker(), s.Account.DeactivateWorker(), ready,
		expiry{store: s.Store, validated: cfg.ValidatedSessionLifetime,
			attempts: max(account.AttemptWindow, cfg.Email.TokenLifetime, cfg.MSISDN.TokenLifetime)}}
	if s.Events.Enabled() {
		s.workers = append(s.workers, s.Events.Worker())
	}
	if mirror != nil {
		s.workers = append(s.workers, mirror.Worker())
	}
	if s.Reconciler != nil && cfg.Homeserver.ReconcileInterval > 0 {
		s.workers = append(s.workers, &reconcile.Worker{R: s.Reconciler})
	}
	return router.Wrap(routes, proxies.FromProxy), nil
}

// namedIdentityServers returns the client of the identity servers clients
// name: a transport that connects only to addresses outbound.ip_range_denylist
// and _allowlist let through (checked after DNS resolution), with the roots of
// outbound.ca_files, no redirects, every call bounded by outboundTimeout.
func namedIdentityServers(cfg *config.Config, key *signingkey.Key) (*identity.Client, error) {
	guard, err := outbound.NewGuard(cfg.Outbound.IPRangeDenylist, cfg.Outbound.IPRangeAllowlist)
	if err != nil {
		return nil, fmt.Errorf("outbound: %w", err)
	}
	roots, err := cfg.Outbound.CertPool()
	if err != nil {
		return nil, err
	}
	guarded := outbound.NewClient(outbound.NewGuardedTransport(guard, roots), outboundTimeout)
	return identity.NewClient(cfg.ServerName, key, federation.NewKeyRing(guarded), guarded), nil
}

// logWhatStopsWorking warns, at startup, of what a Synapse deployment loses
// without the mirror or the admin API (homeserver.mirror: none set explicitly,
// no homeserver.admin_token).
func logWhatStopsWorking(cfg *config.Config) {
	if cfg.Homeserver.Kind != config.KindSynapse {
		return
	}
	if cfg.Homeserver.Mirror == config.MirrorNone {
		slog.Warn("homeserver.mirror is none: Synapse's own 3PID table no longer follows threepidd. " +
			"Addresses added through threepidd do not reset passwords by e-mail, do not log in with m.id.thirdparty " +
			"and get no e-mail notification pusher; addresses removed through threepidd still do all three; " +
			"Synapse's registration does not see them as taken.")
	}
	if !cfg.SynapseAdmin() {
		slog.Warn("homeserver.admin_token is empty: threepidd does not ask Synapse who holds an address before granting it, " +
			"does not import an address given at registration on the user's first request (GET /account/3pid omits it, and " +
			"another account may add it), and runs no reconcile pass (accounts deactivated through Synapse's admin API keep " +
			"their 3PIDs and identity-server bindings in threepidd).")
	}
}

// health is the liveness check: the process answers and its database too.
func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	if err := ping(r.Context(), s.Store); err != nil {
		return err
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
		if errors.Is(err, http.ErrServerClosed) || s.drain.draining.Load() {
			return nil // Shutdown closed the listener
		}
		return fmt.Errorf("serve: %w", err)
	}
}

// Shutdown stops accepting, answers the /sync long-polls at once, asks the
// clients of the open connections to close them (answers with "Connection:
// close", up to drainGrace), lets in-flight requests finish (bounded by
// ShutdownTimeout), stops the workers
// (an outbox item being handled is finished first, the rest of its batch
// released for another instance), ends the idle SMTP
// connections and closes the database: a rolling restart behind a load
// balancer loses no request that was accepted.
func (s *Server) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	// Refuse new connections (a load balancer sends them to another
	// instance), answer the long-polls at once (their clients come back
	// through the load balancer) rather than hold the shutdown up until
	// ShutdownTimeout cuts them off, and let the clients of the open
	// connections close them (drainer).
	s.stream.Drain()
	s.drain.drain(s.listener)
	err := s.http.Shutdown(ctx)
	if s.metricsHTTP != nil {
		_ = s.metricsHTTP.Shutdown(ctx)
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// Close ends the idle SMTP connections and closes the database: all of
// Shutdown for a Server from Open.
func (s *Server) Close() error {
	if mailer, ok := s.Account.Email.(io.Closer); ok {
		_ = mailer.Close()
	}
	return s.Store.Close()
}

func (s *Server) closeListeners() {
	s.listener.Close()
	if s.metricsListener != nil {
		s.metricsListener.Close()
	}
}

// startWorkers starts every background worker.
func (s *Server) startWorkers(ctx context.Context) {
	for _, w := range s.workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.Run(ctx)
		}()
	}
}

// expiry drops, every minute, the rate-limit buckets that are full again
// (so that the table holds only the keys used within a refill time), the
// validation sessions past their use, the token attempts that count no more,
// the replay hashes older than 30 days and the requestToken send claims left
// by requests that died (older than an hour).
type expiry struct {
	store storage.Store
	// validated is validated_session_lifetime: a session is of use until
	// then after its last token expired.
	validated time.Duration
	// attempts is how long a token attempt counts: a day, or a token
	// lifetime if that is longer.
	attempts time.Duration
}

// Run implements worker.
func (e expiry) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if _, err := e.store.ForgetFullRateLimits(ctx, now.UnixMicro()); err != nil {
			slog.WarnContext(ctx, "forget full rate-limit buckets", "err", err)
		}
		if _, err := e.store.DeleteSessionsExpiredBefore(ctx, now.Add(-e.validated).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire validation sessions", "err", err)
		}
		if _, err := e.store.ForgetTokenAttemptsBefore(ctx, now.Add(-e.attempts).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire token attempts", "err", err)
		}
		if _, err := e.store.ForgetRequestsBefore(ctx, now.Add(-30*24*time.Hour).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire replay hashes", "err", err)
		}
		if _, err := e.store.ForgetSendClaimsBefore(ctx, now.Add(-time.Hour).UnixMilli()); err != nil {
			slog.WarnContext(ctx, "expire requestToken send claims", "err", err)
		}
	}
}
