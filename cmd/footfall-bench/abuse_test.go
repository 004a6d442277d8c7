package main

import (
	"testing"
)

// TestAbuseShort runs `abuse` for real, briefly, against a footfall built
// from this module: no 5xx, the idle keep-alives and slowloris upgrades
// closed by the server, the node back at its baseline, the legitimate
// clients still connected. No figure of speed is asserted.
func TestAbuseShort(t *testing.T) {
	var rep abuseReport
	runJSON(t, &rep, "abuse",
		// A low REST limit, so that the bursts meet it however slowly this
		// machine sends them (the race detector slows the harness too).
		"--server-env", "FOOTFALL_REQUEST_RATE_PER_IP=1", "--idle-timeout", "2s",
		"--legit", "20", "--quiet-phase", "2s", "--duration", "3s", "--settle", "30s",
		"--burst-addrs", "4", "--burst", "250", "--idle", "40", "--slowloris", "20",
		"--bogus", "30", "--resumes", "10")
	if rep.FiveXX != 0 {
		t.Errorf("%d answers were 5xx; want none", rep.FiveXX)
	}
	if rep.IdleOpened == 0 || rep.IdleClosed != rep.IdleOpened || rep.SlowOpened == 0 || rep.SlowClosed != rep.SlowOpened {
		t.Errorf("the server closed %d of %d idle keep-alives and %d of %d slowloris upgrades; want all", rep.IdleClosed, rep.IdleOpened, rep.SlowClosed, rep.SlowOpened)
	}
	if rep.ReturnedAfterS < 0 {
		t.Errorf("not back at baseline: before %+v, after %+v", rep.Before, rep.After)
	}
	if rep.LegitReady != 20 || rep.LegitDropped != 0 {
		t.Errorf("legitimate clients: %d ready, %d disconnected; want 20 and 0", rep.LegitReady, rep.LegitDropped)
	}
	if rep.Attacks["burst: REST polls"].Answers["429"] == 0 || rep.Attacks["burst: stream connections"].Answers["429"] == 0 {
		t.Errorf("bursts were never refused with 429: %+v", rep.Attacks)
	}
	for _, name := range []string{"bogus: WebSocket, bad signature", "long-gap resumes", "bogus: service API, wrong key"} {
		if rep.Attacks[name].Attempts == 0 {
			t.Errorf("attack %q did not run", name)
		}
	}
}
