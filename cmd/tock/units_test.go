package main

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"1.5h", 90 * time.Minute},
		{"3µs", 3 * time.Microsecond},
		{"365d", 365 * 24 * time.Hour},
		{"8760h", 365 * 24 * time.Hour},
		{"1d", 24 * time.Hour},
		{"1.5d", 36 * time.Hour},
		{".5d", 12 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"12h1d", 36 * time.Hour},
		{"2d3h4m5s", 2*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second},
		{"-2d", -48 * time.Hour},
		{"+1d1s", 24*time.Hour + time.Second},
		{" 7d ", 7 * 24 * time.Hour},
		{"106751d", 106751 * 24 * time.Hour},
	} {
		got, err := parseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "d", "1", "1x", "d1", "1dd", "1D", "--1d", "1.2.3d", "1d 2h", "abc",
		"106752d",      // past the largest Duration
		"106751d24h",   // past it by the sum
		"99999999999d", // overflows before multiplying
	} {
		if got, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                  "0s",
		10 * time.Second:   "10s",
		time.Minute:        "1m0s",
		72 * time.Hour:     "3d",
		8760 * time.Hour:   "365d",
		36 * time.Hour:     "36h0m0s",
		-48 * time.Hour:    "-2d",
		time.Millisecond:   "1ms",
		25*time.Hour + 1e9: "25h0m1s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := parseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("parseDuration(formatDuration(%v)) = %v, %v", d, back, err)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"524288", 524288},
		{"100B", 100},
		{"512KiB", 512 << 10},
		{"512kib", 512 << 10},
		{"512k", 512 << 10},
		{"512K", 512 << 10},
		{"512Ki", 512 << 10},
		{"512kB", 512000},
		{"1MiB", 1 << 20},
		{"1M", 1 << 20},
		{"1MB", 1000000},
		{"2GiB", 2 << 30},
		{"1GB", 1e9},
		{" 64 KiB ", 64 << 10},
	} {
		got, err := parseBytes(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1.5MiB", "12XB", "1 2", "0x10", "99999999999999999999", "9999999999GiB"} {
		if got, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0:          "0",
		1000:       "1000",
		1024:       "1KiB",
		524288:     "512KiB",
		1 << 20:    "1MiB",
		3 << 30:    "3GiB",
		1536 << 10: "1536KiB",
	} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFlagValues(t *testing.T) {
	var d time.Duration
	dv := newDurationValue(&d, time.Hour)
	if d != time.Hour || dv.String() != "1h0m0s" {
		t.Fatalf("default: %v %q", d, dv.String())
	}
	if err := dv.Set("2d"); err != nil || d != 48*time.Hour || dv.String() != "2d" {
		t.Fatalf("Set(2d): %v, %v, %q", err, d, dv.String())
	}
	if err := dv.Set("soon"); err == nil || d != 48*time.Hour {
		t.Fatalf("Set(soon): %v, %v", err, d)
	}
	var n int
	bv := newBytesValue(&n, 1024)
	if n != 1024 || bv.String() != "1KiB" {
		t.Fatalf("default: %d %q", n, bv.String())
	}
	if err := bv.Set("1MiB"); err != nil || n != 1<<20 {
		t.Fatalf("Set(1MiB): %v, %d", err, n)
	}
	if err := bv.Set("lots"); err == nil || n != 1<<20 {
		t.Fatalf("Set(lots): %v, %d", err, n)
	}
	// flag.PrintDefaults calls String on a zero value.
	if (&durationValue{}).String() == "" || (&bytesValue{}).String() == "" {
		t.Fatal("zero values must print")
	}
}
