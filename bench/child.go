package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tockd/tock/gateway"
)

// child is one `tock serve` process.
type child struct {
	bin, data, logPath  string
	extra               []string
	natsAddr, pprofAddr string
	cmd                 *exec.Cmd
	logFile             *os.File
	started             time.Time
	exited              chan struct{}
	waitErr             error
	plain               chan plainOutcome // the --bench-plain result line, once
}

// plainOutcome is a parsed --bench-plain result line.
type plainOutcome struct {
	res PlainResult
	err error
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startChild starts `bin serve` on data with fresh ports; its stderr goes
// to logPath (appended, so a restart keeps the first life's log).
func startChild(bin, data, logPath string, extra ...string) (*child, error) {
	c := &child{bin: bin, data: data, logPath: logPath, extra: extra, exited: make(chan struct{}), plain: make(chan plainOutcome, 1)}
	var err error
	if c.natsAddr, err = freeAddr(); err != nil {
		return nil, fmt.Errorf("free port: %w", err)
	}
	if c.pprofAddr, err = freeAddr(); err != nil {
		return nil, fmt.Errorf("free port: %w", err)
	}
	if c.logFile, err = os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, fmt.Errorf("child log: %w", err)
	}
	args := append([]string{"serve", "--data", data, "--nats-listen", c.natsAddr, "--pprof", c.pprofAddr,
		"--log-level", "warn", "--log-format", "json"}, extra...)
	c.cmd = exec.Command(bin, args...)
	// serve writes nothing to stdout but the bench aid's result line: watch
	// for it, and log everything.
	c.cmd.Stdout, c.cmd.Stderr = &stdoutWatcher{w: c.logFile, plain: c.plain}, c.logFile
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		c.logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		c.logFile.Close()
		close(c.exited)
	}()
	return c, nil
}

// stdoutWatcher copies a child's stdout to w and hands the first
// --bench-plain result line to plain. exec calls Write from one goroutine.
type stdoutWatcher struct {
	w       io.Writer
	partial []byte
	plain   chan<- plainOutcome
}

func (s *stdoutWatcher) Write(p []byte) (int, error) {
	s.partial = append(s.partial, p...)
	for {
		line, rest, ok := bytes.Cut(s.partial, []byte("\n"))
		if !ok {
			break
		}
		if res, ok, err := parsePlainLine(string(line)); ok {
			select {
			case s.plain <- plainOutcome{res, err}:
			default:
			}
		}
		s.partial = rest
	}
	s.partial = append(s.partial[:0:0], s.partial...) // do not pin what was read
	return s.w.Write(p)
}

// plainResult waits for the child's --bench-plain result.
func (c *child) plainResult(ctx context.Context) (PlainResult, error) {
	select {
	case o := <-c.plain:
		return o.res, o.err
	case <-c.exited:
		select {
		case o := <-c.plain:
			return o.res, o.err
		default:
		}
		return PlainResult{}, fmt.Errorf("%w: it exited: %v; log tail:\n%s", errNoPlainResult, c.waitErr, c.logTail(20))
	case <-ctx.Done():
		return PlainResult{}, fmt.Errorf("%w: %w", errNoPlainResult, ctx.Err())
	}
}

func (c *child) url() string { return "nats://" + c.natsAddr }

func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports an error if the process has exited.
func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("tock serve exited: %v; log tail:\n%s", c.waitErr, c.logTail(20))
	default:
		return nil
	}
}

// waitReady polls (every 10 ms) until the service answers $SRV.PING.tock.
func (c *child) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := c.alive(); err != nil {
			return err
		}
		if nc, err := nats.Connect(c.url(), nats.Timeout(time.Second)); err == nil {
			_, err = nc.Request("$SRV.PING.tock", nil, time.Second)
			nc.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tock serve not ready after %v; log tail:\n%s", timeout, c.logTail(20))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// connect opens a client connection that tolerates nothing (benchmarks
// should see failures, not hide them behind reconnects).
func (c *child) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(c.url(), nats.Name(name), nats.Timeout(5*time.Second), nats.MaxReconnects(0))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.url(), err)
	}
	return nc, nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// stop asks for a graceful shutdown, and kills after 10 s.
func (c *child) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.kill()
	}
}

// logTail returns the last n lines of the child's stderr.
func (c *child) logTail(n int) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "(log empty)"
	}
	return "  " + strings.Join(lines, "\n  ")
}

// heapStats are the runtime.MemStats lines of the heap profile.
type heapStats struct{ alloc, inuse, sys int64 }

// heap forces a GC in the child and reads its heap figures.
func (c *child) heap(ctx context.Context) (heapStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.pprofAddr+"/debug/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return heapStats{}, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return heapStats{}, fmt.Errorf("heap profile: %w", err)
	}
	defer res.Body.Close()
	return parseHeapProfile(res.Body)
}

// parseHeapProfile reads "# HeapAlloc = N" and friends from a debug=1
// heap profile.
func parseHeapProfile(r io.Reader) (heapStats, error) {
	var h heapStats
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "# ") {
			continue
		}
		k, v, ok := strings.Cut(line[2:], " = ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "HeapAlloc":
			h.alloc = n
			found++
		case "HeapInuse":
			h.inuse = n
			found++
		case "Sys":
			h.sys = n
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("heap profile: %w", err)
	}
	if found < 3 {
		return h, errors.New("heap profile: no HeapAlloc/HeapInuse/Sys lines")
	}
	return h, nil
}

// rss is the child's resident set size in bytes.
func (c *child) rss() (int64, error) { return c.statusBytes("VmRSS") }

// hwm is the child's peak resident set size in bytes.
func (c *child) hwm() (int64, error) { return c.statusBytes("VmHWM") }

// statusBytes reads a "N kB" field of the child's /proc status.
func (c *child) statusBytes(key string) (int64, error) {
	v := procField(fmt.Sprintf("/proc/%d/status", c.pid()), key)
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0, fmt.Errorf("no %s", key)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", key, v, err)
	}
	return n * 1024, nil
}

// status asks the child for tock.status.
func (c *child) status(nc *nats.Conn) (gateway.StatusResponse, error) {
	var st gateway.StatusResponse
	m, err := nc.Request(gateway.SubjectStatus, nil, 5*time.Second)
	if err != nil {
		return st, fmt.Errorf("tock.status: %w", err)
	}
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return st, fmt.Errorf("tock.status reply: %w", err)
	}
	return st, nil
}

// journalState returns the size of tock's journal, which lives in tock's
// private account: clients learn it from tock.status.
func journalState(ctx context.Context, nc *nats.Conn) (jetstream.StreamState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, gateway.SubjectStatus, nil)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("tock status: %w", err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		return jetstream.StreamState{}, fmt.Errorf("tock status: error %s: %s", code, m.Header.Get(micro.ErrorHeader))
	}
	var st gateway.StatusResponse
	if err := json.Unmarshal(m.Data, &st); err != nil {
		return jetstream.StreamState{}, fmt.Errorf("tock status: %w", err)
	}
	return jetstream.StreamState{Msgs: st.Journal.Messages, Bytes: st.Journal.Bytes, NumSubjects: st.Journal.Subjects}, nil
}

// streamState returns the state of a stream on nc.
func streamState(ctx context.Context, nc *nats.Conn, name string, opts ...jetstream.StreamInfoOpt) (jetstream.StreamState, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx, opts...)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("stream %s info: %w", name, err)
	}
	return info.State, nil
}

// dirSize is the bytes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // files come and go while the server runs
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
