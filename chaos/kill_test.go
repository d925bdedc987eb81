// Package chaos checks tock's promises from outside, against the real
// `tock serve` process: only a nats.go client, real kill -9s, restarts on
// the same data directory. Bounded in count and time, loopback only.
package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

var tockBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tock-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tockBin = filepath.Join(dir, "tock")
	build := exec.Command("go", "build", "-o", tockBin, "../cmd/tock")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tock:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestKillNineUnderLoad kills tock with SIGKILL at random moments while
// producers schedule and cancel, restarts it on the same data directory,
// and then checks from the target stream alone: every acknowledged and not
// cancelled message arrived, no acknowledged cancel was delivered, and
// nothing arrived before its deliver time.
func TestKillNineUnderLoad(t *testing.T) {
	kills := 20
	if s := os.Getenv("TOCK_CHAOS_KILLS"); s != "" {
		kills, _ = strconv.Atoi(s)
	}
	p := newProc(t, "--slot-width", "1s", "--horizon", "300ms")
	p.start()
	nc, js, l, stopLoad := startLoad(t, p)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	graceful := 0
	for k := range kills {
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		p.kill()
		t.Logf("kill -9 #%d", k+1)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		p.start()
		if k%5 == 4 {
			// Now and then a graceful restart between the kills: SIGTERM
			// under load must lose nothing either, and exit cleanly.
			time.Sleep(time.Duration(200+rng.IntN(500)) * time.Millisecond)
			p.stop()
			graceful++
			p.start()
		}
	}
	time.Sleep(500 * time.Millisecond)
	stopLoad()

	l.mu.Lock()
	defer l.mu.Unlock()
	st := check(t, nc, js, l, fmt.Sprintf("after %d kill -9s and %d graceful restarts", kills, graceful))
	t.Logf("all %d delivered after %d consecutive-load kill -9s and %d graceful restarts; %d duplicates reached the stream", st.want, kills, graceful, st.dups)
}
