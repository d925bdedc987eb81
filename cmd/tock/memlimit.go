package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"path"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// memoryLimitPercent is the share of the cgroup's memory limit that tock
// sets as the Go runtime's soft memory limit when neither --memory-limit
// nor GOMEMLIMIT says otherwise. The soft limit makes the GC work harder
// as the heap nears it, instead of the heap growing by --gc-percent into
// the cgroup's hard limit and the kernel's OOM killer. The remaining 10%
// is room for what the cgroup charges but the Go runtime does not count:
// the binary's text, kernel memory charged to the cgroup (socket
// buffers, page tables), dirty page-cache pages of the JetStream files not
// yet written back, and the overshoot while the GC catches up with a
// burst of allocations. 90% is also the common default elsewhere
// (automemlimit, for one). The limit is soft: a live heap above it still
// grows, with the GC capped at about half the CPU, rather than failing.
const memoryLimitPercent = 90

// noMemoryLimit is the runtime's "no limit" (the default of GOMEMLIMIT).
const noMemoryLimit = math.MaxInt64

// defaultMemoryBudget is the memory tock sizes itself for when nothing
// says otherwise (no flag, no GOMEMLIMIT, no cgroup limit): it runs as in
// a container of this size, at memoryLimitPercent of it. Without any
// limit the heap grows to five times its live size (--gc-percent 400)
// with nothing to stop it: a minute holding 2 GiB of 512 KiB bodies took
// 5.7 GiB of RSS, and 0.79 GiB with a 768 MiB limit, every message
// delivered either way (BENCHMARKS.md). A bigger machine says so with
// --memory-limit (0: none); a live heap above the limit still grows, with
// the GC working harder, and is logged.
const defaultMemoryBudget = 1 << 30

// cgroupUnlimited: cgroup v1 reports "no limit" as a number near
// MaxInt64 rounded down to a page; anything this large is no limit.
const cgroupUnlimited = 1 << 62

// cgroupMemoryLimit returns the memory limit of the process's cgroup and
// the file it was read from, or 0 when there is none. fsys is the
// filesystem root (os.DirFS("/") in tock, a directory of fake files in
// tests).
//
// The cgroup comes from proc/self/cgroup: the line whose controllers
// include memory (cgroup v1, limit in memory.limit_in_bytes under
// sys/fs/cgroup/memory), else the unified "0::" line (cgroup v2,
// memory.max under sys/fs/cgroup). The limit is the smallest one set on
// that cgroup and its ancestors up to the mount's root, since every one
// of them applies; inside a container the mount's root is the
// container's own cgroup. No proc/self/cgroup (not Linux) is no limit.
func cgroupMemoryLimit(fsys fs.FS) (limit int64, file string, err error) {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	mount, name, rel := "", "", ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" && mount == "" {
			mount, name, rel = "sys/fs/cgroup", "memory.max", f[2]
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "memory" {
				mount, name, rel = "sys/fs/cgroup/memory", "memory.limit_in_bytes", f[2]
			}
		}
	}
	if mount == "" {
		return 0, "", nil
	}
	dir := path.Join(mount, strings.TrimPrefix(path.Clean("/"+rel), "/"))
	for {
		v, ferr := readCgroupLimit(fsys, path.Join(dir, name))
		if ferr != nil {
			return 0, "", ferr
		}
		if v > 0 && (limit == 0 || v < limit) {
			limit, file = v, "/"+path.Join(dir, name)
		}
		if dir == mount {
			return limit, file, nil
		}
		dir = path.Dir(dir)
	}
}

// readCgroupLimit reads one limit file: 0 for "max", a huge number, or
// no file; an error for anything else unreadable.
func readCgroupLimit(fsys fs.FS, name string) (int64, error) {
	data, err := fs.ReadFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/%s: %q is not a limit", name, s)
	}
	if n >= cgroupUnlimited {
		return 0, nil
	}
	return int64(n), nil
}

// memoryLimitChoice is the Go runtime's soft memory limit tock runs with.
type memoryLimitChoice struct {
	limit int64  // bytes; noMemoryLimit for none
	apply bool   // call debug.SetMemoryLimit(limit); false keeps the runtime's own
	from  string // where it came from, for the log
}

// chooseMemoryLimit decides the soft memory limit: --memory-limit when
// given (0: none), else GOMEMLIMIT when set (the runtime has applied it;
// current is its value), else memoryLimitPercent of the cgroup's limit,
// else memoryLimitPercent of defaultMemoryBudget. A cgroup that cannot be
// read counts as none, and its error is returned for the log.
func chooseMemoryLimit(flagGiven bool, flagValue int64, gomemlimit string, current int64, cgroup func() (int64, string, error)) (memoryLimitChoice, error) {
	switch {
	case flagGiven && flagValue == 0:
		return memoryLimitChoice{noMemoryLimit, true, "--memory-limit 0"}, nil
	case flagGiven:
		return memoryLimitChoice{flagValue, true, "--memory-limit"}, nil
	case gomemlimit != "":
		return memoryLimitChoice{current, false, "GOMEMLIMIT=" + gomemlimit}, nil
	}
	limit, file, err := cgroup()
	if err != nil || limit == 0 {
		return memoryLimitChoice{defaultMemoryBudget / 100 * memoryLimitPercent, true,
			fmt.Sprintf("no cgroup memory limit: %d%% of the default %s", memoryLimitPercent, formatBytes(defaultMemoryBudget))}, err
	}
	return memoryLimitChoice{limit / 100 * memoryLimitPercent, true,
		fmt.Sprintf("%d%% of %s = %s", memoryLimitPercent, file, formatBytes(limit))}, nil
}

// String prints the limit for the log: "none" or a size.
func (c memoryLimitChoice) String() string {
	if c.limit == noMemoryLimit {
		return "none"
	}
	return formatSize(c.limit)
}

// formatSize prints n exactly when formatBytes can (4GiB), else in the
// largest IEC unit it reaches, to two decimals at most: 3.6GiB.
func formatSize(n int64) string {
	if n%(1<<20) == 0 || n < 1<<10 {
		return formatBytes(n)
	}
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			v := strconv.FormatFloat(float64(n)/float64(u.size), 'f', 2, 64)
			return strings.TrimSuffix(strings.TrimRight(v, "0"), ".") + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// heapWatchEvery is how often watchLiveHeap looks, and at most how often
// it warns.
const heapWatchEvery = time.Minute

// liveHeapWarnPercent of the soft limit is where the live heap (what the
// last GC kept) makes tock warn: the GC runs ever more often as live nears
// the limit, and firing pays for it.
const liveHeapWarnPercent = 80

// watchLiveHeap warns, at most once per every, while the live heap is
// above liveHeapWarnPercent of limit, until ctx ends.
func watchLiveHeap(ctx context.Context, limit int64, every time.Duration, log *slog.Logger) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if live := int64(sample[0].Value.Uint64()); live > limit/100*liveHeapWarnPercent {
			log.Warn("live heap near the memory limit; the GC is working hard: raise --memory-limit (or the container's limit)",
				"live_heap", formatSize(live), "memory_limit", formatSize(limit))
		}
	}
}
