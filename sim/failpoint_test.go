package sim

import (
	"strings"
	"sync"
	"testing"

	"github.com/pingcap/failpoint"
)

// enable enables the simulator failpoint name for the rest of the test.
func enable(t *testing.T, name, terms string) {
	t.Helper()
	full := FailpointPrefix + name
	if err := failpoint.Enable(full, terms); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = failpoint.Disable(full) })
}

func run1(t *testing.T, cfg Config) Report {
	t.Helper()
	rep, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestFailpointAlone: with --faults off, enabling one failpoint injects
// that fault kind and no other.
func TestFailpointAlone(t *testing.T) {
	allowed := map[string][]string{
		"crash":          {"crash", "crash-write-stored", "crash-write-lost"},
		"publishFail":    {"publish-fail"},
		"appendAckLost":  {"append-ack-lost"},
		"clockJump":      {"clock-jump"},
		"loadFail":       {"load-fail"},
		"publishAckLost": {"publish-ack-lost"},
		"clockBack":      {"clock-back", "crash", "crash-write-stored", "crash-write-lost"},
	}
	for name, kinds := range allowed {
		t.Run(name, func(t *testing.T) {
			enable(t, name, "return(true)")
			fired := 0
			for seed := uint64(1); seed <= 3; seed++ {
				rep := run1(t, small(seed, false))
				for k, n := range rep.Faults {
					if !contains(kinds, k) {
						t.Errorf("seed %d: only %s enabled, yet %s=%d (faults %v)", seed, name, k, n, rep.Faults)
					}
				}
				fired += rep.Faults[kinds[0]]
			}
			if fired == 0 {
				t.Errorf("%s enabled, never fired", name)
			}
		})
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// TestFailpointRates: a failpoint's value sets its rate, with --faults on
// (overriding the default) and off.
func TestFailpointRates(t *testing.T) {
	def := run1(t, small(5, true))
	if def.Faults["publish-fail"] == 0 || def.Faults["append-lost"] == 0 || def.Crashes == 0 {
		t.Fatalf("default rates inject too little: %v", def.Faults)
	}

	t.Run("raised", func(t *testing.T) {
		enable(t, "publishFail", `return("0.3")`)
		rep := run1(t, small(5, true))
		if rep.Faults["publish-fail"] < 5*def.Faults["publish-fail"] {
			t.Errorf("publish-fail at 30%%: %d, at the default 2%%: %d", rep.Faults["publish-fail"], def.Faults["publish-fail"])
		}
	})
	t.Run("percent", func(t *testing.T) {
		enable(t, "appendFail", `return("20%")`)
		rep := run1(t, small(5, false))
		if rep.Faults["append-lost"] < 5*def.Faults["append-lost"] || len(rep.Faults) != 1 {
			t.Errorf("append-lost at 20%%: %v, at the default 1%%: %d", rep.Faults, def.Faults["append-lost"])
		}
	})
	t.Run("off", func(t *testing.T) {
		enable(t, "appendFail", "return(false)")
		enable(t, "crash", "off")
		enable(t, "clockBack", "off") // a restart too
		rep := run1(t, small(5, true))
		if rep.Faults["append-lost"] != 0 || rep.Crashes != 0 || rep.Faults["publish-fail"] == 0 {
			t.Errorf("appendFail, crash and clockBack off: %v, %d crashes", rep.Faults, rep.Crashes)
		}
	})
}

// TestFailpointCrashRate: crash's value is the probability that a planned
// crash happens.
func TestFailpointCrashRate(t *testing.T) {
	planned, happened := 0, 0
	for seed := uint64(1); seed <= 6; seed++ {
		planned += run1(t, small(seed, true)).Crashes
	}
	enable(t, "crash", `return("0.5")`)
	for seed := uint64(1); seed <= 6; seed++ {
		happened += run1(t, small(seed, true)).Crashes
	}
	if happened == 0 || happened >= planned {
		t.Errorf("crash at 0.5: %d crashes of %d planned", happened, planned)
	}
}

// TestFailpointDeterminism: the same seed and failpoints give the same
// trace, and failpoint's own random source plays no part.
func TestFailpointDeterminism(t *testing.T) {
	enable(t, "publishSlow", `return("0.1")`)
	enable(t, "crash", `return("0.5")`)
	for _, faults := range []bool{false, true} {
		a, b := run1(t, small(6, faults)), run1(t, small(6, faults))
		if a.TraceHash != b.TraceHash || a.TraceEvents != b.TraceEvents {
			t.Errorf("faults %v: hashes %x %x", faults, a.TraceHash, b.TraceHash)
		}
	}
}

// TestFailpointRegistry: Run leaves the registry as it found it, and keeps
// the value of a failpoint the user enabled.
func TestFailpointRegistry(t *testing.T) {
	enable(t, "crash", `return("0.25")`)
	run1(t, small(2, true))
	for _, full := range Failpoints() {
		desc, err := failpoint.Status(full)
		switch {
		case strings.HasSuffix(full, "/crash"):
			if desc != `return("0.25")` {
				t.Errorf("%s: %q %v", full, desc, err)
			}
		case err == nil:
			t.Errorf("%s left enabled: %q", full, desc)
		}
	}
}

func TestFailpointBadValues(t *testing.T) {
	for _, c := range []struct{ name, terms, want string }{
		{"crash", "50%return(true)", "modifiers"},
		{"crash", "return(true)->off", "modifiers"},
		{"crash", "sleep(10)", "modifiers"},
		{"crash", "return(5)", "probability"},
		{"crash", `return("1.5")`, "probability"},
		{"crash", `return("x")`, "probability"},
		{"publishFail", `return("0.7")`, "more than 1"},
	} {
		t.Run(c.terms, func(t *testing.T) {
			enable(t, c.name, c.terms)
			if c.name == "publishFail" {
				enable(t, "publishSlow", `return("0.4")`)
			}
			_, err := Run(small(1, false))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s=%s: %v", c.name, c.terms, err)
			}
		})
	}
}

// TestFailpointConcurrentRuns: runs in parallel do not see each other's
// failpoints (each reads the registry once, at its start).
func TestFailpointConcurrentRuns(t *testing.T) {
	want := map[bool]uint64{}
	for _, faults := range []bool{false, true} {
		want[faults] = run1(t, small(4, faults)).TraceHash
	}
	var wg sync.WaitGroup
	for i := range 6 {
		faults := i%2 == 1
		wg.Go(func() {
			rep, err := Run(small(4, faults))
			if err != nil {
				t.Error(err)
				return
			}
			if rep.TraceHash != want[faults] {
				t.Errorf("faults %v in parallel: hash %x, alone %x", faults, rep.TraceHash, want[faults])
			}
		})
	}
	wg.Wait()
}

// TestFaultRatesInConfig: Config.FaultRates sets a rate as a failpoint
// does, and beats one set through the failpoint registry.
func TestFaultRatesInConfig(t *testing.T) {
	cfg := small(5, false)
	cfg.FaultRates = map[string]float64{"publishFail": 0.3}
	explicit := run1(t, cfg)
	if explicit.Faults["publish-fail"] == 0 || len(explicit.Faults) != 1 {
		t.Errorf("publishFail=0.3 alone: faults %v", explicit.Faults)
	}
	t.Run("as the failpoint", func(t *testing.T) {
		enable(t, "publishFail", `return("0.3")`)
		if rep := run1(t, small(5, false)); rep.TraceHash != explicit.TraceHash {
			t.Errorf("failpoint publishFail=0.3: hash %x, FaultRates: %x", rep.TraceHash, explicit.TraceHash)
		}
	})
	t.Run("beats the failpoint", func(t *testing.T) {
		enable(t, "publishFail", `return("0.01")`)
		enable(t, "crash", "return(true)")
		c := cfg
		c.FaultRates = map[string]float64{"publishFail": 0.3, "crash": 0}
		if rep := run1(t, c); rep.TraceHash != explicit.TraceHash {
			t.Errorf("FaultRates over failpoints: hash %x, want %x (faults %v)", rep.TraceHash, explicit.TraceHash, rep.Faults)
		}
	})
	for _, bad := range []map[string]float64{{"nope": 0.1}, {"crash": 1.5}, {"crash": -0.1}, {"publishFail": 0.6, "publishSlow": 0.5}} {
		c := small(1, false)
		c.FaultRates = bad
		if _, err := Run(c); err == nil {
			t.Errorf("FaultRates %v accepted", bad)
		}
	}
}

// TestRerunCarriesFailpoints: rates set through the failpoint registry are
// in the rerun line, which replays the run once they are gone.
func TestRerunCarriesFailpoints(t *testing.T) {
	var rep Report
	t.Run("with failpoints", func(t *testing.T) {
		enable(t, "crash", `return("0.5")`)
		enable(t, "loadFail", "return(false)")
		enable(t, "publishSlow", "return(true)") // the default: not named
		rep = run1(t, small(3, true))
	})
	rerun := rep.Config.RerunCommand()
	_, flag, ok := strings.Cut(rerun, " --fault-rates ")
	if !ok || flag != "loadFail=0,crash=0.5" {
		t.Fatalf("rerun line %q: want --fault-rates loadFail=0,crash=0.5 at its end", rerun)
	}
	rates, err := ParseFaultRates(flag)
	if err != nil {
		t.Fatal(err)
	}
	cfg := small(3, true)
	cfg.FaultRates = rates
	if again := run1(t, cfg); again.TraceHash != rep.TraceHash || again.Faults["load-fail"] != 0 {
		t.Errorf("rerun without the failpoints: hash %x faults %v, with them: %x %v", again.TraceHash, again.Faults, rep.TraceHash, rep.Faults)
	}
}

func TestParseFaultRates(t *testing.T) {
	got, err := ParseFaultRates(" appendFail=0.05, crash=50% ,clockJump=1")
	if err != nil || len(got) != 3 || got["appendFail"] != 0.05 || got["crash"] != 0.5 || got["clockJump"] != 1 {
		t.Errorf("got %v, %v", got, err)
	}
	if s := FormatFaultRates(got); s != "appendFail=0.05,crash=0.5,clockJump=1" {
		t.Errorf("formatted %q", s)
	}
	for _, bad := range []string{"crash", "crash=", "crash=2", "crash=x", "nope=0.1", "crash=-1%"} {
		if _, err := ParseFaultRates(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
