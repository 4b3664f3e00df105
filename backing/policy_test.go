package backing

import (
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	good := map[string]Policy{
		"fsync":           {Kind: PolicyFsync},
		"write-through":   {Kind: PolicyWriteThrough},
		"close":           {Kind: PolicyClose},
		"periodic:200ms":  {Kind: PolicyPeriodic, Period: 200 * time.Millisecond},
		"periodic:5s":     {Kind: PolicyPeriodic, Period: 5 * time.Second},
		"async":           {Kind: PolicyAsync},
		"none":            {Kind: PolicyNone},
		"periodic:1h2m3s": {Kind: PolicyPeriodic, Period: time.Hour + 2*time.Minute + 3*time.Second},
	}
	for in, want := range good {
		got, err := ParsePolicy(in)
		if err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if again, err := ParsePolicy(got.String()); err != nil || again != got {
			t.Errorf("ParsePolicy(%q.String() = %q) = %+v, %v", in, got.String(), again, err)
		}
	}
	for _, in := range []string{"", "bogus", "periodic", "periodic:", "periodic:0s", "periodic:-1s", "periodic:abc", "FSYNC", "write_through"} {
		_, err := ParsePolicy(in)
		if err == nil {
			t.Errorf("ParsePolicy(%q) succeeded", in)
			continue
		}
		if !strings.Contains(err.Error(), "periodic") {
			t.Errorf("ParsePolicy(%q): %v; want the error to say what is valid", in, err)
		}
	}
}

func TestParseAdvice(t *testing.T) {
	for _, name := range strings.Split(AdviceNames, ", ") {
		a, err := ParseAdvice(name)
		if err != nil || a.String() != name {
			t.Errorf("ParseAdvice(%q) = %v, %v", name, a, err)
		}
	}
	if _, err := ParseAdvice("dontneed"); err == nil || !strings.Contains(err.Error(), "sequential") {
		t.Errorf("ParseAdvice(dontneed): %v; want an error listing the valid ones", err)
	}
}
