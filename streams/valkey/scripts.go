package valkey

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"

	"github.com/footfall/footfall/streams"
)

// The Lua scripts. Every change of a community's state is one script on
// that community's hash slot (KEYS[1] is its meta key "ff:{c}:m"; the other
// keys share the "ff:{c}:" prefix and so the slot), so it is atomic on a
// single server and on a cluster alike.
//
// Scripts never decode or re-encode event JSON: Go hands over the JSON of
// a published event, and the scripts only frame it as
// "<seq>:<epoch>:<unix seconds or empty>:<json>". Presence events are
// built by the scripts from integers only.
//
// The community scripts share the prelude below and the ARGV layout:
//
//	ARGV[1] now, ms (node clock)      ARGV[4] expiry of today's keys, ms
//	ARGV[2] local midnight of now, ms ARGV[5] now, unix seconds (event time)
//	ARGV[3] day of now, "2006-01-02"  ARGV[6] epoch to use if none yet
//
// followed by the script's own arguments from ARGV[7].
//
//go:embed lua/prelude.lua
var prelude string

// recordChunk and outboxChunk define history_record(old, new) and
// outbox_presence(old, new), which the prelude's publish_presence calls at
// every change of the present count; they take the prelude's place
// "-- $RECORD", so they can use its helpers and it can call them.
//
//go:embed lua/record.lua
var recordChunk string

// histReadScript returns the community's present count, its latest history
// records (ff:{c}:r:c) and the records of step ARGV[1] ("m", "h" or "d")
// in the keys of the buckets starting at ARGV[2..] (unix ms), "" for a
// missing key (history.go). It reads only.
//
//go:embed lua/histread.lua
var histReadScript string

//go:embed lua/outbox.lua
var outboxChunk string

// touchScript adds or renews one source. ARGV[7] visitor key, ARGV[8]
// source id, ARGV[9] deadline ms (0: held), ARGV[10] the node's lease. It
// returns result() with extra = 1 when the global TTL index may need the
// community at the new deadline (the first TTL source, or an earlier one).
//
//go:embed lua/touch.lua
var touchScript string

// leaveScript ends one source. ARGV[7] visitor key, ARGV[8] source id,
// ARGV[9] the node's lease and ARGV[10] (may be empty) the lease the
// community's sources were registered under before it: held sources are
// looked up there, then among the TTL sources.
//
//go:embed lua/leave.lua
var leaveScript string

// snapshotScript settles the community and returns result().
//
//go:embed lua/snapshot.lua
var snapshotScript string

// reapScript ends the sources a lease (ARGV[7]) holds in the community, at
// most ARGV[8] of them per run: the lease lapsed (its node died) or its node
// says goodbye. extra is the number of sources left to end; callers run it
// again until none is. Sources are removed as they are ended, so each ends
// once whichever node runs it.
//
//go:embed lua/reap.lua
var reapScript string

// syncScript makes the set of sources the node holds in the community
// exactly ARGV[10..] (set, not incremented), moving them from an earlier
// lease ARGV[7] (may be empty or equal) to the current lease ARGV[8]. It
// first raises the community's seq to at least ARGV[9], so that sequence
// numbers never go backwards for a node's subscribers after Valkey lost
// its data. With an empty ARGV[8] it does only that.
//
// Visitors that appear or disappear do so silently; one presence event
// with the final figures, marked resync, then tells subscribers (no storm
// of joins after a restart; gateways fold the resyncs of all nodes).
//
//go:embed lua/sync.lua
var syncScript string

// publishScript publishes ARGV[7], the JSON of an event. It returns the
// event's seq and epoch.
//
//go:embed lua/publish.lua
var publishScript string

// historyScript returns {1, payload...} with the events after seq ARGV[2]
// of epoch ARGV[1], or {0} when they are not all in the history any more,
// or when there are more than ARGV[3] of them (ARGV[3] > 0). It reads only.
//
//go:embed lua/history.lua
var historyScript string

// revokeScript flips the live session KEYS[1] to revoked and announces it
// on channel ARGV[2]. ARGV[1] now (ms), ARGV[3] the session id. It returns
// 0 when there is no live session to revoke.
//
//go:embed lua/revoke.lua
var revokeScript string

// claimScript claims up to ARGV[3] members of the sorted set KEYS[1] whose
// score is due (<= ARGV[1]) by moving their score to ARGV[2]; other nodes'
// reapers then leave them alone until that time passes. It touches one
// (global) key, which is fine on a cluster.
//
//go:embed lua/claim.lua
var claimScript string

// unclaimScript removes the members ARGV[2..] of KEYS[1] whose score is
// still the claim ARGV[1] (a member that was given an earlier score in the
// meantime keeps it).
//
//go:embed lua/unclaim.lua
var unclaimScript string

// webhookEnqueueScript queues the webhook event ARGV[1] (value ARGV[2]) in
// the community outbox KEYS[1] unless the marker KEYS[2] (same slot) says
// it was queued before; ARGV[3] is the outbox's and the marker's expiry
// (ms), ARGV[4] the outbox's bound. It returns 1 when the event is pending
// (to index), 0 otherwise.
//
//go:embed lua/webhook_enqueue.lua
var webhookEnqueueScript string

// script is a Lua script with its SHA-1, run with EVALSHA (falling back to
// EVAL after a server restart emptied the script cache).
type script struct {
	lua      *valkey.Lua
	sha      string
	readOnly bool
}

func newScript(src string, readOnly bool) *script {
	sum := sha1.Sum([]byte(src))
	s := &script{sha: hex.EncodeToString(sum[:]), readOnly: readOnly}
	if readOnly {
		s.lua = valkey.NewLuaScriptReadOnly(src)
	} else {
		s.lua = valkey.NewLuaScript(src)
	}
	return s
}

// scripts are the bus's scripts, built for its options.
type scripts struct {
	touch, leave, snapshot, reap, sync, publish *script
	history, revoke, claim, unclaim             *script
	histRead                                    *script
	whEnqueue                                   *script
}

// newScripts builds the scripts; webhooks turns the outbox chunk on.
func newScripts(logTTL, metaTTL int64, webhooks bool) *scripts {
	wh := "0"
	if webhooks {
		wh = "1"
	}
	r := strings.NewReplacer(
		"$WEBHOOKS", wh,
		"$WHMAX", strconv.Itoa(streams.MaxWebhooksPerCommunity),
		"$WHKEEP", strconv.FormatInt(streams.WebhookRetention.Milliseconds(), 10),
		"$LIMIT", strconv.Itoa(exactToday),
		"$HLLS", strconv.Itoa(todayHLLs),
		"$HISTSIZE", strconv.Itoa(historySize),
		"$HISTAGE", strconv.FormatInt(historyAge.Milliseconds(), 10),
		"$MAXHIST", strconv.Itoa(maxHistory),
		"$LOGTTL", strconv.FormatInt(logTTL, 10),
		"$METATTL", strconv.FormatInt(metaTTL, 10),
		"$EXPIREMAX", strconv.Itoa(maxPerRun),
		"$HISTKEEPM", strconv.FormatInt(historyKeep(streams.StepMinute), 10),
		"$HISTKEEPH", strconv.FormatInt(historyKeep(streams.StepHour), 10),
		"$HISTKEEPD", strconv.FormatInt(historyKeep(streams.StepDay), 10),
	)
	pre := r.Replace(strings.Replace(prelude, "-- $RECORD", recordChunk+outboxChunk, 1))
	return &scripts{
		touch:    newScript(pre+touchScript, false),
		leave:    newScript(pre+leaveScript, false),
		snapshot: newScript(pre+snapshotScript, false),
		reap:     newScript(pre+reapScript, false),
		sync:     newScript(pre+syncScript, false),
		publish:  newScript(pre+publishScript, false),
		history:  newScript(historyScript, true),
		revoke:   newScript(revokeScript, false),
		claim:    newScript(claimScript, false),
		unclaim:  newScript(unclaimScript, false),
		histRead: newScript(histReadScript, true),

		whEnqueue: newScript(webhookEnqueueScript, false),
	}
}

// exec runs s once.
func (s *script) exec(ctx context.Context, c valkey.Client, keys, args []string) valkey.ValkeyResult {
	return s.lua.Exec(ctx, c, keys, args)
}

// execMany runs s once per element of execs in one pipeline (per server),
// and runs again with EVAL those that met a server without the script.
func (s *script) execMany(ctx context.Context, c valkey.Client, execs []valkey.LuaExec) []valkey.ValkeyResult {
	if len(execs) == 0 {
		return nil
	}
	cmds := make(valkey.Commands, len(execs))
	for i, e := range execs {
		if s.readOnly {
			cmds[i] = c.B().EvalshaRo().Sha1(s.sha).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build()
		} else {
			cmds[i] = c.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(e.Keys))).Key(e.Keys...).Arg(e.Args...).Build()
		}
	}
	res := c.DoMulti(ctx, cmds...)
	for i, r := range res {
		if verr, ok := valkey.IsValkeyErr(r.Error()); ok && verr.IsNoScript() {
			res[i] = s.lua.Exec(ctx, c, execs[i].Keys, execs[i].Args)
		}
	}
	return res
}
