package natsjournal

import (
	"context"
	"fmt"
)

// Info is the journal stream's size, for status reports: with the
// journal in tock's private account, clients cannot ask the stream.
type Info struct {
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	Subjects uint64 `json:"subjects"`
}

// Info reads the stream's state.
func (n *Journal) Info(ctx context.Context) (Info, error) {
	si, err := n.stream.Info(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("journal stream info: %w", err)
	}
	return Info{Stream: si.Config.Name, Messages: si.State.Msgs, Bytes: si.State.Bytes, Subjects: si.State.NumSubjects}, nil
}
