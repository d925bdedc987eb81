// Package natstest runs real embedded NATS servers for tests: tock's tests
// talk to the real server, never to a mock of it.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Start runs a nats-server on a free loopback port until the test ends.
// A non-empty storeDir enables JetStream, stored there.
func Start(t testing.TB, storeDir string) *server.Server {
	t.Helper()
	return StartOptions(t, &server.Options{JetStream: storeDir != "", StoreDir: storeDir})
}

// Connect opens a connection to s that closes when the test ends.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartOptions runs a nats-server with opts (users, nkeys, operator mode,
// TLS, JetStream, …) on a free loopback port until the test ends. Host,
// Port, NoLog and NoSigs are set unless opts sets them; with JetStream
// and no StoreDir the store is a temporary directory.
func StartOptions(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	o := *opts
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = -1
	}
	o.NoLog, o.NoSigs = true, true
	if o.JetStream && o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	s, err := server.NewServer(&o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}
