package gateway

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/micro"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/natsjournal"
)

// SubjectStatus answers a StatusResponse; the request body is ignored.
const SubjectStatus = "tock.status"

// EndpointStatus is the status endpoint's name in $SRV.INFO.
const EndpointStatus = "status"

// StatusResponse is the reply to tock.status: what an operator checks
// first, and the journal's size, which clients cannot read themselves.
type StatusResponse struct {
	Version   string           `json:"version"`
	Scheduler actors.Stats     `json:"scheduler"`
	Journal   natsjournal.Info `json:"journal"`
	// Quarantine lists the journal records refused since start
	// (docs/SECURITY.md): skipped, copied to TOCK_QUARANTINE.
	Quarantine journal.QuarantineStats `json:"quarantine"`
}

// StatusFunc gathers a StatusResponse; it may block for a short while.
type StatusFunc func() (StatusResponse, error)

// AddStatus serves tock.status from fn. Failures reply 503: the parts
// that report are busy or gone.
func (g *Gateway) AddStatus(fn StatusFunc) error {
	err := g.svc.AddEndpoint(EndpointStatus, micro.HandlerFunc(func(r micro.Request) {
		st, err := fn()
		if err != nil {
			g.log.Warn("status", "err", err)
			e := &Error{Code: CodeUnavailable, Description: oneLine(fmt.Sprintf("status: %v", err))}
			_ = r.Error(strconv.Itoa(e.Code), e.Description, ErrorBody(e))
			return
		}
		b, err := json.Marshal(st)
		if err != nil {
			e := Internal("status: %v", err)
			_ = r.Error(strconv.Itoa(e.Code), e.Description, ErrorBody(e))
			return
		}
		_ = r.Respond(b)
	}), micro.WithEndpointSubject(SubjectStatus),
		micro.WithEndpointMetadata(map[string]string{"description": "tell tock's version, counters and journal size"}))
	if err != nil {
		return fmt.Errorf("gateway: add endpoint %s: %w", EndpointStatus, err)
	}
	return g.nc.Flush()
}
