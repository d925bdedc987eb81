package chaos

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// faults enables all of tock's failpoints at once, in GO_FAILPOINTS
// syntax: <package path>/<name>=<terms>, separated by ';'. "5%return(true)"
// fires on 5% of evaluations.
var faults = strings.Join([]string{
	"github.com/tockd/tock/journal/natsjournal/appendFail=5%return(true)",
	"github.com/tockd/tock/journal/natsjournal/appendAckLost=5%return(true)",
	"github.com/tockd/tock/delivery/publishFail=10%return(true)",
	"github.com/tockd/tock/delivery/publishAckLost=10%return(true)",
}, ";")

var (
	fpOnce sync.Once
	fpBin  string
	fpErr  error
	fpOut  []byte
)

// buildFailpoints builds tock with its failpoint markers live, once per
// test process, next to tockBin. It uses failpoint-toolexec, a tool of
// this module, which rewrites the markers in copies under its own temp
// directory: the tree is never touched. The -gcflags pattern is a no-op
// for the compiler, but gives tock's packages build cache keys of their
// own: the go command does not key its cache on -toolexec, so without it
// this build would reuse plain objects (markers dead), and a plain build
// after it could reuse rewritten ones.
func buildFailpoints(t *testing.T) string {
	t.Helper()
	fpOnce.Do(func() {
		dir := filepath.Dir(tockBin)
		tool := exec.Command("go", "tool", "-n", "failpoint-toolexec")
		tool.Dir = ".."
		var out []byte
		if out, fpErr = tool.Output(); fpErr != nil {
			fpOut = []byte("go tool -n failpoint-toolexec failed")
			return
		}
		tmp := filepath.Join(dir, "fp-tmp") // failpoint-toolexec writes its copies under $TMPDIR
		if fpErr = os.MkdirAll(tmp, 0o700); fpErr != nil {
			return
		}
		fpBin = filepath.Join(dir, "tock-failpoints")
		build := exec.Command("go", "build",
			"-toolexec", strings.TrimSpace(string(out)),
			"-gcflags", "github.com/tockd/tock/...=-nolocalimports",
			"-o", fpBin, "./cmd/tock")
		build.Dir = ".."
		build.Env = append(os.Environ(), "TMPDIR="+tmp)
		fpOut, fpErr = build.CombinedOutput()
		if fpErr == nil && !bytes.Contains(mustRead(fpBin), []byte("failpoint appendFail")) {
			// failpoint-toolexec exits 0 even when it could not rewrite. The
			// marker body's error text exists only where the marker is live.
			fpErr = errNoMarkers
		}
	})
	if fpErr != nil {
		t.Fatalf("build tock with failpoints: %v\n%s", fpErr, fpOut)
	}
	return fpBin
}

type buildError string

func (e buildError) Error() string { return string(e) }

const errNoMarkers = buildError("the binary holds no live failpoint markers")

func mustRead(name string) []byte {
	b, _ := os.ReadFile(name)
	return b
}

// TestFailpointsUnderLoad runs a failpoint build of `tock serve` with every
// fault on: journal records refused or their acks lost, deliveries not
// sent or their acks lost. Producers schedule and cancel meanwhile, and
// tock is killed twice. Then the faults stop (a restart without
// GO_FAILPOINTS) and tock must deliver every acknowledged, uncancelled
// message, nothing early, no acknowledged cancel, and nothing twice.
func TestFailpointsUnderLoad(t *testing.T) {
	bin := buildFailpoints(t)
	p := newProc(t, "--slot-width", "1s", "--horizon", "300ms")
	p.bin = bin
	p.env = []string{"GO_FAILPOINTS=" + faults}
	p.start()
	nc, js, l, stopLoad := startLoad(t, p)
	const kills = 2
	for k := range kills {
		time.Sleep(1500 * time.Millisecond)
		p.kill()
		t.Logf("kill -9 #%d", k+1)
		p.start()
	}
	time.Sleep(1500 * time.Millisecond)
	stopLoad()

	// Faults stop: from here on, liveness.
	p.kill()
	p.env = nil
	p.start()

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unavailable == 0 {
		t.Fatalf("no 503 reached a producer: the journal failpoints did not fire")
	}
	st := check(t, nc, js, l, "under failpoints")
	log := mustRead(p.log.Name())
	fired := map[string]int{}
	for _, name := range []string{"appendFail", "publishFail", "publishAckLost"} {
		fired[name] = bytes.Count(log, []byte("failpoint "+name))
	}
	t.Logf("all %d delivered; %d 503s seen by producers; %d ids stored that were answered 503; failpoint errors logged: %v; %d duplicates reached the stream",
		st.want, l.unavailable, st.unacked, fired, st.dups)
	if fired["publishFail"] == 0 || fired["publishAckLost"] == 0 {
		t.Errorf("delivery failpoints did not fire: %v", fired)
	}
	if st.dups > 0 {
		t.Errorf("%d duplicates reached the stream despite Nats-Msg-Id", st.dups)
	}
}
