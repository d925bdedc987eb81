package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// parseDuration is time.ParseDuration that also knows the unit "d" (24h),
// alone or combined with the others: "365d", "1.5d", "1d12h", "-2d".
func parseDuration(s string) (time.Duration, error) {
	bad := func() (time.Duration, error) {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 90s, 15m, 36h, 7d, 1d12h)", s)
	}
	rest := strings.TrimSpace(s)
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return bad()
	}
	var days time.Duration // the "d" terms, summed
	var other strings.Builder
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] == '.' || '0' <= rest[i] && rest[i] <= '9') {
			i++
		}
		j := i
		for j < len(rest) && rest[j] != '.' && !('0' <= rest[j] && rest[j] <= '9') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		if num == "" || unit == "" {
			return bad()
		}
		if unit != "d" {
			other.WriteString(num)
			other.WriteString(unit)
			continue
		}
		h, err := time.ParseDuration(num + "h")
		if err != nil || h > math.MaxInt64/24 {
			return bad()
		}
		days += h * 24
		if days < 0 {
			return bad()
		}
	}
	total := days
	if other.Len() > 0 {
		d, err := time.ParseDuration(other.String())
		if err != nil {
			return bad()
		}
		total += d
		if total < 0 {
			return bad()
		}
	}
	if neg {
		total = -total
	}
	return total, nil
}

// formatDuration prints whole days as "Nd" and everything else as
// time.Duration does.
func formatDuration(d time.Duration) string {
	if d != 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// durationValue is a flag.Value for parseDuration.
type durationValue struct{ p *time.Duration }

func newDurationValue(p *time.Duration, def time.Duration) *durationValue {
	*p = def
	return &durationValue{p}
}

func (v *durationValue) String() string {
	if v == nil || v.p == nil {
		return "0s"
	}
	return formatDuration(*v.p)
}

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.p = d
	return nil
}

// byteUnits maps a size suffix (lower case) to its multiplier. IEC suffixes
// and the bare letters are powers of 1024; SI ones (kB, MB, GB) of 1000.
var byteUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1e9,
}

// parseBytes reads a byte count: "524288", "512KiB", "512k", "1MiB", "1MB".
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	mult, ok := byteUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("invalid size %q (want e.g. 524288, 512KiB, 1MiB)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// formatBytes prints n with the largest IEC suffix that divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// bytesValue is a flag.Value for parseBytes into an int.
type bytesValue struct{ p *int }

func newBytesValue(p *int, def int) *bytesValue {
	*p = def
	return &bytesValue{p}
}

func (v *bytesValue) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return formatBytes(int64(*v.p))
}

func (v *bytesValue) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	if n > math.MaxInt {
		return errors.New("size is too large")
	}
	*v.p = int(n)
	return nil
}
