package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is the stream a new journal gets.
func (c Config) streamConfig() jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:      c.Stream,
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy,
	}
	c.enforce(&sc)
	return sc
}

// enforce sets what the journal relies on in sc, and reports whether that
// changed anything. Operator choices it does not rely on (replicas, size
// limits, placement) are left alone.
func (c Config) enforce(sc *jetstream.StreamConfig) bool {
	before := *sc
	before.Subjects = slices.Clone(sc.Subjects)
	before.Metadata = maps.Clone(sc.Metadata)

	if subj := c.Prefix + ".>"; !slices.Contains(sc.Subjects, subj) {
		sc.Subjects = append(sc.Subjects, subj)
	}
	// Retention is tock's job: records must never expire or be dropped to
	// make room. Hitting a size limit must fail appends instead.
	sc.MaxAge = 0
	sc.MaxMsgsPerSubject = -1
	sc.Discard = jetstream.DiscardNew
	sc.DiscardNewPerSubject = false
	sc.AllowDirect = true
	sc.AllowRollup = true // the meta record replaces its predecessor
	sc.Duplicates = duplicateWindow
	if sc.Metadata == nil {
		sc.Metadata = make(map[string]string)
	}
	sc.Metadata[SlotWidthKey] = c.widthMs()
	if _, ok := sc.Metadata[BucketWidthKey]; !ok {
		// A new stream, or one written before far buckets existed: it
		// has no far records yet, so any width fits.
		sc.Metadata[BucketWidthKey] = strconv.FormatInt(c.bucketMs(), 10)
	}

	return !slices.Equal(before.Subjects, sc.Subjects) ||
		before.MaxAge != sc.MaxAge ||
		before.MaxMsgsPerSubject != sc.MaxMsgsPerSubject ||
		before.Discard != sc.Discard ||
		before.DiscardNewPerSubject != sc.DiscardNewPerSubject ||
		before.AllowDirect != sc.AllowDirect ||
		before.AllowRollup != sc.AllowRollup ||
		before.Duplicates != sc.Duplicates ||
		before.Metadata[SlotWidthKey] != sc.Metadata[SlotWidthKey] ||
		before.Metadata[BucketWidthKey] != sc.Metadata[BucketWidthKey]
}

// ensureStream opens the journal stream, creating it if missing and
// updating what the journal relies on if an operator changed it.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg.streamConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another instance created it meanwhile, maybe differently.
			s, err = js.Stream(ctx, cfg.Stream)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("journal stream %s: %w", cfg.Stream, err)
	}
	return adoptStream(ctx, js, s, cfg)
}

func adoptStream(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, cfg Config) (jetstream.Stream, error) {
	sc := s.CachedInfo().Config
	if got, ok := sc.Metadata[SlotWidthKey]; ok && got != cfg.widthMs() {
		return nil, fmt.Errorf("%w: stream %s holds slots of %s ms, configured %s ms",
			ErrSlotWidthMismatch, cfg.Stream, got, cfg.widthMs())
	}
	if err := checkUsable(sc); err != nil {
		return nil, fmt.Errorf("journal stream %s: %w", cfg.Stream, err)
	}
	if !cfg.enforce(&sc) {
		return s, nil
	}
	s, err := js.UpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("journal stream %s: update: %w", cfg.Stream, err)
	}
	return s, nil
}

// checkUsable rejects streams the journal cannot fix with an update.
func checkUsable(sc jetstream.StreamConfig) error {
	switch {
	case sc.Retention != jetstream.LimitsPolicy:
		return fmt.Errorf("retention is %v, the journal needs limits", sc.Retention)
	case sc.DenyPurge:
		return errors.New("it denies purges, the journal needs them")
	case sc.Sealed:
		return errors.New("it is sealed")
	case sc.Mirror != nil:
		return errors.New("it is a mirror")
	}
	return nil
}
