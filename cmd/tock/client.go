package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/internal/natsurl"
	"github.com/tockd/tock/msgid"
)

// NATS API of tock, as the gateway serves it.
const (
	scheduleSubject = "tock.schedule." // + target
	cancelSubject   = "tock.cancel."   // + id
	getSubject      = "tock.get."      // + id
	redriveSubject  = "tock.redrive."  // + id

	hdrDeliverAt = "Tock-Deliver-At"
	hdrDelay     = "Tock-Delay"
	hdrID        = "Tock-Id"

	envNATSURL     = "TOCK_NATS_URL"
	defaultNATSURL = "nats://127.0.0.1:4222"
	defaultTimeout = 5 * time.Second
)

// clientOpts are the flags every client verb has.
type clientOpts struct {
	url     string
	timeout time.Duration
	conn    connOpts
}

func addClientFlags(fs *flag.FlagSet, o *clientOpts) {
	url := os.Getenv(envNATSURL)
	if url == "" {
		url = defaultNATSURL
	}
	fs.StringVar(&o.url, "nats-url", url, "NATS server `URL`; $"+envNATSURL+" sets the default")
	fs.Lookup("nats-url").DefValue = natsurl.Redact(url) // help prints it
	fs.Var(newDurationValue(&o.timeout, defaultTimeout), "timeout", "give up on the connection or reply after this `duration`")
	addConnFlags(fs, &o.conn)
	o.conn.readEnv(os.Getenv)
}

// connect checks the connection flags (a usage error if they do not fit)
// and connects.
func (o *clientOpts) connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	auth, err := o.conn.options(o.url)
	if err != nil {
		return nil, err
	}
	opts = append(append([]nats.Option{nats.Name("tock " + name), nats.Timeout(o.timeout)}, auth...), opts...)
	nc, err := nats.Connect(o.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", natsurl.Redact(o.url), err)
	}
	return nc, nil
}

// request sends m and prints the reply: the JSON on stdout, or an error
// reply as "error CODE: description" on stderr with status 1.
func (o *clientOpts) request(ctx context.Context, c *command, m *nats.Msg, stdout, stderr io.Writer) int {
	nc, err := o.connect(c.name)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	reply, err := nc.RequestMsgWithContext(rctx, m)
	switch {
	case err == nil:
		return printReply(c, reply.Data, stdout, stderr)
	case errors.Is(err, nats.ErrNoResponders):
		err = fmt.Errorf("nothing answers on %s at %s: is tock serving there?", m.Subject, natsurl.Redact(o.url))
	case ctx.Err() != nil:
		err = fmt.Errorf("interrupted")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		err = fmt.Errorf("no reply on %s within %s", m.Subject, o.timeout)
	}
	return failUsage(c, err, stdout, stderr)
}

// apiError is the error reply of the tock API.
type apiError struct {
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
		State       string `json:"state"`
	} `json:"error"`
	State string `json:"state"`
}

func printReply(c *command, data []byte, stdout, stderr io.Writer) int {
	var e apiError
	if err := json.Unmarshal(data, &e); err != nil {
		fmt.Fprintf(stderr, "tock %s: reply is not JSON: %q\n", c.name, truncate(data, 200))
		return 1
	}
	if e.Error != nil {
		fmt.Fprintf(stderr, "error %d: %s", e.Error.Code, e.Error.Description)
		if s := e.Error.State + e.State; s != "" {
			fmt.Fprintf(stderr, " (state: %s)", s)
		}
		fmt.Fprintln(stderr)
		return 1
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		buf.Reset()
		buf.Write(data)
	}
	buf.WriteByte('\n')
	stdout.Write(buf.Bytes())
	return 0
}

// checkSubject accepts a NATS subject to publish to: dot-separated
// non-empty tokens, no wildcards, no white space.
func checkSubject(s string) error {
	if s == "" {
		return errors.New("empty subject")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("invalid subject %q", s)
		}
	}
	return nil
}

// ---- schedule

type scheduleOpts struct {
	clientOpts
	to      string
	at      string
	in      string
	headers headerList
}

func scheduleFlags(o *scheduleOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("schedule", flag.ContinueOnError)
	fs.StringVar(&o.to, "to", "", "deliver to this NATS `subject` (required)")
	fs.StringVar(&o.at, "at", "", "deliver at this `time`: RFC 3339 or Unix milliseconds; a past time means now (the reply's deliver_at says when)")
	fs.StringVar(&o.in, "in", "", "deliver after this `duration`: 90s, 15m, 36h, 7d")
	fs.Var(&o.headers, "H", "add header `KEY:VALUE` to the message (repeatable)")
	fs.Var(&o.headers, "header", "same as -H `KEY:VALUE`")
	addClientFlags(fs, &o.clientOpts)
	return fs
}

// headerList collects -H KEY:VALUE flags in order.
type headerList [][2]string

func (h *headerList) String() string {
	if h == nil {
		return ""
	}
	var parts []string
	for _, kv := range *h {
		parts = append(parts, kv[0]+": "+kv[1])
	}
	return strings.Join(parts, ", ")
}

func (h *headerList) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return errors.New("want KEY:VALUE")
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("invalid header name %q", k)
		}
	}
	if strings.ContainsAny(v, "\r\n") {
		return errors.New("header value has a line break")
	}
	if strings.EqualFold(k, hdrDeliverAt) || strings.EqualFold(k, hdrDelay) {
		return fmt.Errorf("set %s with --at or --in", k)
	}
	*h = append(*h, [2]string{k, strings.TrimSpace(v)})
	return nil
}

// checkDeliverAt accepts what the gateway takes in Tock-Deliver-At: RFC 3339
// with an optional fraction, or integer Unix milliseconds.
func checkDeliverAt(s string) error {
	if _, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return nil
	}
	if _, err := strconv.ParseUint(s, 10, 63); err == nil {
		return nil
	}
	return fmt.Errorf("invalid --at %q: want RFC 3339 (2030-01-02T15:04:05Z) or Unix milliseconds", s)
}

// scheduleRequest is a parsed "tock schedule" command line.
type scheduleRequest struct {
	opts      scheduleOpts
	msg       *nats.Msg // Data is empty when bodyStdin
	bodyStdin bool
}

func parseSchedule(args []string) (*scheduleRequest, error) {
	r := new(scheduleRequest)
	o := &r.opts
	pos, err := parseArgs(scheduleFlags(o), args)
	if err != nil {
		return nil, err
	}
	if o.to == "" {
		return nil, usagef("--to is required")
	}
	if err := checkSubject(o.to); err != nil {
		return nil, usagef("--to: %v", err)
	}
	if (o.at == "") == (o.in == "") {
		return nil, usagef("give exactly one of --at and --in")
	}
	if len(pos) > 1 {
		return nil, usagef("more than one BODY argument (quote the body, or use - for stdin)")
	}
	m := nats.NewMsg(scheduleSubject + o.to)
	for _, kv := range o.headers {
		m.Header.Add(kv[0], kv[1])
	}
	if o.at != "" {
		at := strings.TrimSpace(o.at)
		if err := checkDeliverAt(at); err != nil {
			return nil, &usageError{err.Error()}
		}
		m.Header.Set(hdrDeliverAt, at)
	} else {
		d, err := parseDuration(o.in)
		if err != nil {
			return nil, usagef("--in: %v", err)
		}
		if d < 0 {
			return nil, usagef("--in %s is negative; use --at for a time in the past", o.in)
		}
		m.Header.Set(hdrDelay, d.String())
	}
	if len(pos) == 1 {
		if pos[0] == "-" {
			r.bodyStdin = true
		} else {
			m.Data = []byte(pos[0])
		}
	}
	r.msg = m
	return r, nil
}

func runSchedule(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := lookup("schedule")
	r, err := parseSchedule(args)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	if r.bodyStdin {
		body, err := io.ReadAll(stdin)
		if err != nil {
			return failUsage(c, fmt.Errorf("read body from stdin: %w", err), stdout, stderr)
		}
		r.msg.Data = body
	}
	return r.opts.request(ctx, c, r.msg, stdout, stderr)
}

// ---- cancel, get

func idFlags(name string, o *clientOpts) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	addClientFlags(fs, o)
	return fs
}

// parseID parses "tock cancel|get [flags] ID" into the request to send.
func parseID(name, prefix string, args []string) (*clientOpts, *nats.Msg, error) {
	o := new(clientOpts)
	pos, err := parseArgs(idFlags(name, o), args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != 1 {
		return nil, nil, usagef("want exactly one ID, got %d arguments", len(pos))
	}
	if _, err := msgid.Parse(pos[0]); err != nil {
		return nil, nil, &usageError{err.Error()}
	}
	return o, nats.NewMsg(prefix + pos[0]), nil
}

// ---- redrive

type redriveOpts struct {
	clientOpts
	at, in string
}

func redriveFlags(o *redriveOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("redrive", flag.ContinueOnError)
	fs.StringVar(&o.at, "at", "", "deliver at this `time` instead of at once: RFC 3339 or Unix milliseconds")
	fs.StringVar(&o.in, "in", "", "deliver after this `duration` instead of at once: 90s, 15m, 36h, 7d")
	addClientFlags(fs, &o.clientOpts)
	return fs
}

// parseRedrive parses "tock redrive [flags] ID".
func parseRedrive(args []string) (*redriveOpts, *nats.Msg, error) {
	o := new(redriveOpts)
	pos, err := parseArgs(redriveFlags(o), args)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) != 1 {
		return nil, nil, usagef("want exactly one ID, got %d arguments", len(pos))
	}
	if _, err := msgid.Parse(pos[0]); err != nil {
		return nil, nil, &usageError{err.Error()}
	}
	if o.at != "" && o.in != "" {
		return nil, nil, usagef("give at most one of --at and --in")
	}
	m := nats.NewMsg(redriveSubject + pos[0])
	switch {
	case o.at != "":
		at := strings.TrimSpace(o.at)
		if err := checkDeliverAt(at); err != nil {
			return nil, nil, &usageError{err.Error()}
		}
		m.Header.Set(hdrDeliverAt, at)
	case o.in != "":
		d, err := parseDuration(o.in)
		if err != nil || d < 0 {
			return nil, nil, usagef("--in %q: want a duration that is not negative", o.in)
		}
		m.Header.Set(hdrDelay, d.String())
	}
	return o, m, nil
}

func runRedrive(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("redrive")
	o, m, err := parseRedrive(args)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	return o.request(ctx, c, m, stdout, stderr)
}

func runCancel(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return runID(ctx, "cancel", cancelSubject, args, stdout, stderr)
}

func runGet(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return runID(ctx, "get", getSubject, args, stdout, stderr)
}

func runID(ctx context.Context, name, prefix string, args []string, stdout, stderr io.Writer) int {
	c := lookup(name)
	o, m, err := parseID(name, prefix, args)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	return o.request(ctx, c, m, stdout, stderr)
}

// truncate cuts b to at most n bytes, backing off to a UTF-8 rune start.
func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	for n > 0 && b[n]&0xc0 == 0x80 {
		n--
	}
	return b[:n]
}
