// Package pgproxy is a TCP proxy for fault injection in tests: it listens on
// 127.0.0.1 with an OS-chosen port and forwards every connection to a target
// (the shared Postgres server), and on demand cuts every connection and
// refuses new ones until it is told to forward again. Tests point their DSN
// at it ([Proxy.DSN]) instead of restarting the shared database server.
package pgproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"
)

// dialTimeout bounds the proxy's connection to the target.
const dialTimeout = 5 * time.Second

// Proxy forwards TCP connections from Addr to a target.
type Proxy struct {
	target string
	addr   string

	mu       sync.Mutex
	listener net.Listener // nil while cut
	conns    map[net.Conn]struct{}
	accepted int
	closed   bool
	wg       sync.WaitGroup
}

// New starts a proxy on 127.0.0.1:0 forwarding to target (host:port).
func New(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pgproxy: listen: %w", err)
	}
	p := &Proxy{target: target, addr: l.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(l)
	return p, nil
}

// Addr is the address the proxy listens on (the same across Cut and Restore).
func (p *Proxy) Addr() string { return p.addr }

// DSN returns dsn, a postgres:// URL, with its host and port replaced by the
// proxy's address.
func (p *Proxy) DSN(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("pgproxy: %q is not a postgres:// URL", dsn)
	}
	u.Host = p.addr
	return u.String(), nil
}

// Accepted returns how many connections the proxy has accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Open returns how many proxied connections are open.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut closes every proxied connection and stops listening, so that new
// connections are refused, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	l := p.listener
	p.listener = nil
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	if l != nil {
		_ = l.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
}

// Restore listens again on the same address and forwards new connections.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("pgproxy: restore after close")
	}
	if p.listener != nil {
		return nil
	}
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("pgproxy: listen again on %s: %w", p.addr, err)
	}
	p.serveLocked(l)
	return nil
}

// Close cuts everything for good and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.Cut()
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Proxy) serve(l net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(l)
}

// serveLocked starts accepting on l; p.mu is held.
func (p *Proxy) serveLocked(l net.Listener) {
	p.listener = l
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return // closed by Cut or Close
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.forward(l, c)
			}()
		}
	}()
}

// forward connects client c (accepted on l) to the target and copies both
// ways until either side closes or Cut closes them.
func (p *Proxy) forward(l net.Listener, c net.Conn) {
	upstream, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.listener != l { // cut while dialling
		p.mu.Unlock()
		_ = c.Close()
		_ = upstream.Close()
		return
	}
	p.accepted++
	p.conns[c] = struct{}{}
	p.conns[upstream] = struct{}{}
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// One direction ended: end the other too, as a dropped link would.
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(upstream, c)
	go pipe(c, upstream)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, upstream)
	p.mu.Unlock()
}
