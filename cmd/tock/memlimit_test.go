package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeRoot writes files (path → content) under a temp dir that stands for
// the filesystem root.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCgroupMemoryLimit(t *testing.T) {
	const v1Unlimited = "9223372036854771712\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		limit int64
		file  string
	}{
		{"v2, own namespace", map[string]string{
			"proc/self/cgroup":          "0::/\n",
			"sys/fs/cgroup/memory.max":  "4294967296\n",
			"sys/fs/cgroup/memory.high": "1\n", // not the limit
		}, 4 << 30, "/sys/fs/cgroup/memory.max"},
		{"v2, parent's limit is the smaller", map[string]string{
			"proc/self/cgroup":                           "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":     "2147483648\n",
			"sys/fs/cgroup/kubepods/memory.max":          "8589934592\n",
		}, 2 << 30, "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		{"v2, own limit is the smaller", map[string]string{
			"proc/self/cgroup":                           "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max": "1073741824\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":     "2147483648\n",
		}, 1 << 30, "/sys/fs/cgroup/kubepods/pod1/ctr/memory.max"},
		{"v2, host's path not mounted: the mount root's", map[string]string{
			"proc/self/cgroup":         "0::/system.slice/docker-abc.scope\n",
			"sys/fs/cgroup/memory.max": "536870912\n",
		}, 512 << 20, "/sys/fs/cgroup/memory.max"},
		{"v2, a path with .. stays inside the mount", map[string]string{
			"proc/self/cgroup":         "0::/../../etc\n",
			"sys/fs/cgroup/memory.max": "536870912\n",
			"etc/memory.max":           "1\n",
		}, 512 << 20, "/sys/fs/cgroup/memory.max"},
		{"v2, no limit", map[string]string{
			"proc/self/cgroup":         "0::/user.slice\n",
			"sys/fs/cgroup/memory.max": "max\n",
		}, 0, ""},
		{"v1, this machine's layout", map[string]string{
			"proc/self/cgroup": "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n",
			"sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "805306368\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":                 v1Unlimited,
			"sys/fs/cgroup/memory.max":                                   "1\n", // the v1 memory controller wins
		}, 768 << 20, "/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes"},
		{"v1, shared controller line, unlimited", map[string]string{
			"proc/self/cgroup": "0::/\n3:cpu,memory:/x\n",
			"sys/fs/cgroup/memory/x/memory.limit_in_bytes": v1Unlimited,
			"sys/fs/cgroup/memory/memory.limit_in_bytes":   v1Unlimited,
		}, 0, ""},
		{"no cgroup file", map[string]string{}, 0, ""},
		{"no memory controller", map[string]string{"proc/self/cgroup": "1:cpu:/\n"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			limit, file, err := cgroupMemoryLimit(os.DirFS(fakeRoot(t, tc.files)))
			if err != nil || limit != tc.limit || file != tc.file {
				t.Errorf("= %d, %q, %v; want %d, %q", limit, file, err, tc.limit, tc.file)
			}
		})
	}
	root := fakeRoot(t, map[string]string{"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "lots\n"})
	if _, _, err := cgroupMemoryLimit(os.DirFS(root)); err == nil || !strings.Contains(err.Error(), "lots") {
		t.Errorf("a garbled memory.max: %v", err)
	}
}

func TestChooseMemoryLimit(t *testing.T) {
	cgroup := func(limit int64, err error) func() (int64, string, error) {
		return func() (int64, string, error) { return limit, "/sys/fs/cgroup/memory.max", err }
	}
	noCall := func() (int64, string, error) { t.Error("cgroup read although the limit was given"); return 0, "", nil }
	for _, tc := range []struct {
		name       string
		flagGiven  bool
		flag       int64
		env        string
		cgroup     func() (int64, string, error)
		want       memoryLimitChoice
		wantString string
		wantErr    bool
	}{
		{"flag", true, 1 << 30, "3GiB", noCall, memoryLimitChoice{1 << 30, true, "--memory-limit"}, "1GiB", false},
		{"flag 0 is none", true, 0, "", noCall, memoryLimitChoice{noMemoryLimit, true, "--memory-limit 0"}, "none", false},
		{"GOMEMLIMIT stays", false, 0, "3GiB", noCall, memoryLimitChoice{3 << 30, false, "GOMEMLIMIT=3GiB"}, "3GiB", false},
		{"90% of the cgroup", false, 0, "", cgroup(4<<30, nil), memoryLimitChoice{4 << 30 / 100 * 90, true, "90% of /sys/fs/cgroup/memory.max = 4GiB"}, "3.6GiB", false},
		{"no cgroup limit", false, 0, "", cgroup(0, nil), memoryLimitChoice{1 << 30 / 100 * 90, true, "no cgroup memory limit: 90% of the default 1GiB"}, "921.6MiB", false},
		{"unreadable cgroup", false, 0, "", cgroup(0, errors.New("boom")), memoryLimitChoice{1 << 30 / 100 * 90, true, "no cgroup memory limit: 90% of the default 1GiB"}, "921.6MiB", true},
	} {
		got, err := chooseMemoryLimit(tc.flagGiven, tc.flag, tc.env, 3<<30, tc.cgroup)
		if got != tc.want || got.String() != tc.wantString || (err != nil) != tc.wantErr {
			t.Errorf("%s: %+v (%s), %v; want %+v (%s)", tc.name, got, got.String(), err, tc.want, tc.wantString)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1000: "1000", 1 << 30: "1GiB", 4 << 30 / 100 * 90: "3.6GiB", 1536 << 10: "1.5MiB", 3 << 20: "3MiB", 1500: "1.46KiB",
	} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestWatchLiveHeap: a live heap above the warning share of the limit is
// logged, one below it is not.
func TestWatchLiveHeap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int64
		warns bool
	}{{"tiny limit", 1 << 10, true}, {"huge limit", 1 << 50, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var buf syncBuffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); watchLiveHeap(ctx, tc.limit, 5*time.Millisecond, log) }()
			runtime.GC() // a live heap to read
			time.Sleep(100 * time.Millisecond)
			cancel()
			<-done
			if got := strings.Contains(buf.String(), "live heap near the memory limit"); got != tc.warns {
				t.Errorf("warned %v, want %v: %q", got, tc.warns, buf.String())
			}
		})
	}
}
