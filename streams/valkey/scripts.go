package valkey

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/valkey-io/valkey-go"
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
const prelude = `
local META = KEYS[1]
local P = string.sub(META, 1, -2)
local VIS, TTL, LOG, CH = P .. 'v', P .. 't', P .. 'l', P .. 'e'
local NOW = tonumber(ARGV[1])
local MID = tonumber(ARGV[2])
local DAY, DAYEXP, TSEC, EPOCH = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local LIMIT, HLLS, HISTSIZE, HISTAGE, MAXHIST = $LIMIT, $HLLS, $HISTSIZE, $HISTAGE, $MAXHIST
local LOGTTL, METATTL, EXPIREMAX = $LOGTTL, $METATTL, $EXPIREMAX
-- The day whose figures are current: set by roll(). A node whose clock is
-- behind keeps the day a faster node started.
local curday, curexp = DAY, DAYEXP
-- fresh: roll() found no community; the first write starts its day.
local fresh = false

local function vkof(m)
  local i = string.find(m, '\0', 1, true)
  return string.sub(m, 1, i - 1)
end

local function today_keys(kind)
  return P .. 'd:' .. curday .. ':' .. kind, P .. 'x:' .. curday .. ':' .. kind
end

-- today_add counts visitor key vk for the current day. The first LIMIT
-- visitors of a kind are counted exactly in a set; the ones beyond it in
-- HLLS HyperLogLogs fed with differently salted names, whose estimates are
-- averaged: the error of the average is that of one over sqrt(HLLS).
-- counted memoizes today_count within one run of a script.
local counted = {}

local function today_add(vk)
  local kind = string.sub(vk, 1, 1)
  local s, h = today_keys(kind)
  counted[kind] = nil
  -- Relative to the node's clock, like every time the scripts see.
  local ttl = math.max(tonumber(curexp) - NOW, 1000)
  local n = redis.call('SCARD', s)
  if n < LIMIT then
    redis.call('SADD', s, vk)
    if n == 0 then
      redis.call('PEXPIRE', s, ttl)
    end
  elseif redis.call('SISMEMBER', s, vk) == 0 then
    local new = redis.call('EXISTS', h .. ':1') == 0
    for i = 1, HLLS do
      redis.call('PFADD', h .. ':' .. i, i .. ':' .. vk)
      if new then
        redis.call('PEXPIRE', h .. ':' .. i, ttl)
      end
    end
  end
end

local function today_count(kind)
  if counted[kind] then
    return counted[kind]
  end
  local s, h = today_keys(kind)
  local n = redis.call('SCARD', s)
  if n >= LIMIT and redis.call('EXISTS', h .. ':1') == 1 then
    local sum = 0
    for i = 1, HLLS do
      sum = sum + redis.call('PFCOUNT', h .. ':' .. i)
    end
    n = n + math.floor(sum / HLLS + 0.5)
  end
  counted[kind] = n
  return n
end

local function epoch()
  local e = redis.call('HGET', META, 'e')
  if not e then
    e = EPOCH
    redis.call('HSET', META, 'e', e)
  end
  return e
end

local function seq()
  return tonumber(redis.call('HGET', META, 's') or '0')
end

-- trim drops the oldest history entries that both rules let go: beyond
-- the last HISTSIZE and older than HISTAGE. Entry ids are "<seq>-<ms>".
local function trim(s)
  if redis.call('XLEN', LOG) <= HISTSIZE then
    return
  end
  local oldest = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
  if #oldest == 0 or tonumber(string.match(oldest[1][1], '-(%d+)$')) >= NOW - HISTAGE then
    return
  end
  local old = redis.call('XRANGE', LOG, '-', string.format('%d', s - HISTSIZE), 'COUNT', 32)
  local cut
  for _, e in ipairs(old) do
    local id, ms = string.match(e[1], '^(%d+)-(%d+)$')
    if tonumber(ms) >= NOW - HISTAGE then
      break
    end
    cut = tonumber(id)
  end
  if cut then
    redis.call('XTRIM', LOG, 'MINID', string.format('%d', cut + 1))
  end
end

-- append assigns the next seq, stores the framed event in the history and
-- publishes it on the community's shard channel.
local function append(body)
  local ep = epoch()
  local s = redis.call('HINCRBY', META, 's', 1)
  if fresh then
    redis.call('HSET', META, 'D', ARGV[2], 'dn', DAY, 'dx', DAYEXP)
    fresh = false
  end
  local payload = s .. ':' .. ep .. ':' .. body
  local id = s .. '-' .. ARGV[1]
  local r = redis.pcall('XADD', LOG, 'MAXLEN', '~', MAXHIST, id, 'p', payload)
  if type(r) == 'table' and r.err then
    -- A log left over from an earlier epoch: start it again.
    redis.call('DEL', LOG)
    redis.call('XADD', LOG, id, 'p', payload)
  end
  trim(s)
  redis.call('PEXPIRE', LOG, LOGTTL)
  redis.call('SPUBLISH', CH, payload)
  return s
end

local function publish_presence(typ, resync)
  local json = '{"type":"' .. typ .. '","count":' .. redis.call('HLEN', VIS) ..
    ',"today":{"authenticated_visitors":' .. today_count('u') ..
    ',"anonymous_visitors":' .. today_count('a') .. '}'
  if resync then
    json = json .. ',"resync":true}'
  else
    json = json .. '}'
  end
  local s = append(TSEC .. ':' .. json)
  redis.call('HSET', META, 'c', TSEC)
  return s
end

-- roll starts a new day if midnight passed since the community's day
-- began: the new day counts every visitor present at midnight (held
-- sources, and TTL sources whose deadline is after midnight), like the
-- memory bus's rollDay.
local function roll()
  local v = redis.call('HMGET', META, 'D', 'dn', 'dx')
  local d = tonumber(v[1] or '0')
  if d >= MID then
    curday, curexp = v[2], v[3]
    return
  end
  local n = redis.call('HLEN', VIS)
  if d == 0 and n == 0 and redis.call('EXISTS', META) == 0 then
    fresh = true
    return
  end
  local bu, ba
  if d ~= 0 then
    curday, curexp = v[2], v[3]
    bu, ba = today_count('u'), today_count('a')
  end
  curday, curexp = DAY, DAYEXP
  counted = {}
  redis.call('HSET', META, 'D', ARGV[2], 'dn', DAY, 'dx', DAYEXP)
  if n > 0 then
    local ended = {}
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', TTL, '-inf', ARGV[2])) do
      local vk = vkof(m)
      ended[vk] = (ended[vk] or 0) + 1
    end
    local all = redis.call('HGETALL', VIS)
    for i = 1, #all, 2 do
      if tonumber(all[i + 1]) > (ended[all[i]] or 0) then
        today_add(all[i])
      end
    end
  end
  if d ~= 0 and (today_count('u') ~= bu or today_count('a') ~= ba) then
    redis.call('HSET', META, 'c', string.format('%d', math.floor(MID / 1000)))
  end
end

-- expire ends the TTL sources whose deadline is not after now (at most
-- EXPIREMAX per run, so that no run blocks the server for long; the rest
-- stays due for the next) and publishes visitor_left for each visitor left
-- without a source, in the order their last source expired.
local function expire()
  local due = redis.call('ZRANGEBYSCORE', TTL, '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, EXPIREMAX)
  if #due == 0 then
    return
  end
  local gone, last, ms = {}, {}, {}
  for i = 1, #due, 2 do
    ms[#ms + 1] = due[i]
  end
  redis.call('ZREM', TTL, unpack(ms))
  for i = 1, #due, 2 do
    local vk = vkof(due[i])
    last[vk] = tonumber(due[i + 1])
    local r = redis.call('HINCRBY', VIS, vk, -1)
    if r == 0 then
      gone[#gone + 1] = vk
    elseif r < 0 then
      redis.call('HDEL', VIS, vk)
    end
  end
  table.sort(gone, function(x, y)
    if last[x] ~= last[y] then
      return last[x] < last[y]
    end
    return x < y
  end)
  for _, vk in ipairs(gone) do
    redis.call('HDEL', VIS, vk)
    publish_presence('visitor_left')
  end
end

local function settle()
  roll()
  expire()
end

-- drop drops one source of visitor vk; it publishes visitor_left
-- when that was the visitor's last. It returns 1 if the visitor left.
local function drop(vk)
  local r = redis.call('HINCRBY', VIS, vk, -1)
  if r <= 0 then
    redis.call('HDEL', VIS, vk)
    if r == 0 then
      publish_presence('visitor_left')
      return 1
    end
  end
  return 0
end

-- result is what every presence script returns: changed, count, seq,
-- today's authenticated and anonymous figures, extra, changed time (unix
-- s), epoch.
local function result(changed, extra)
  local v = redis.call('HMGET', META, 's', 'c', 'e')
  return {changed, redis.call('HLEN', VIS), v[1] or '0', today_count('u'), today_count('a'), extra,
    v[2] or '0', v[3] or ''}
end
`

// touchScript adds or renews one source. ARGV[7] visitor key, ARGV[8]
// source id, ARGV[9] deadline ms (0: held), ARGV[10] the node's lease. It
// returns result() with extra = 1 when the global TTL index may need the
// community at the new deadline (the first TTL source, or an earlier one).
const touchScript = `
settle()
local vk = ARGV[7]
local m = vk .. '\0' .. ARGV[8]
local deadline = tonumber(ARGV[9])
local held = P .. 'h:' .. ARGV[10]
local added, index = 0, 0
if deadline > 0 then
  local first = redis.call('ZRANGE', TTL, 0, 0, 'WITHSCORES')
  if #first == 0 or deadline < tonumber(first[2]) then
    index = 1
  end
  added = redis.call('ZADD', TTL, ARGV[9], m)
  if added == 1 and redis.call('SREM', held, m) == 1 then
    added = 0
  end
else
  added = redis.call('SADD', held, m)
  if added == 1 and redis.call('ZREM', TTL, m) == 1 then
    added = 0
  end
end
local changed = 0
if added == 1 and redis.call('HINCRBY', VIS, vk, 1) == 1 then
  today_add(vk)
  publish_presence('visitor_joined')
  changed = 1
end
redis.call('PEXPIRE', META, METATTL)
return result(changed, index)
`

// leaveScript ends one source. ARGV[7] visitor key, ARGV[8] source id,
// ARGV[9] the node's lease and ARGV[10] (may be empty) the lease the
// community's sources were registered under before it: held sources are
// looked up there, then among the TTL sources.
const leaveScript = `
settle()
local vk = ARGV[7]
local m = vk .. '\0' .. ARGV[8]
local removed = redis.call('SREM', P .. 'h:' .. ARGV[9], m)
if removed == 0 and ARGV[10] ~= '' then
  removed = redis.call('SREM', P .. 'h:' .. ARGV[10], m)
end
if removed == 0 then
  removed = redis.call('ZREM', TTL, m)
end
local changed = 0
if removed == 1 then
  changed = drop(vk)
end
redis.call('PEXPIRE', META, METATTL)
return result(changed, 0)
`

// snapshotScript settles the community and returns result().
const snapshotScript = `
settle()
redis.call('PEXPIRE', META, METATTL)
return result(0, 0)
`

// reapScript ends the sources a lease (ARGV[7]) holds in the community, at
// most ARGV[8] of them per run: the lease lapsed (its node died) or its node
// says goodbye. extra is the number of sources left to end; callers run it
// again until none is. Sources are removed as they are ended, so each ends
// once whichever node runs it.
const reapScript = `
settle()
local held = P .. 'h:' .. ARGV[7]
local ms = redis.call('SPOP', held, tonumber(ARGV[8]))
local n = 0
for _, m in ipairs(ms) do
  n = n + drop(vkof(m))
end
return result(n, redis.call('SCARD', held))
`

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
const syncScript = `
settle()
if tonumber(ARGV[9]) > seq() then
  epoch()
  redis.call('HSET', META, 's', ARGV[9])
end
if ARGV[8] == '' then
  return result(0, 0)
end
local new = P .. 'h:' .. ARGV[8]
local old
if ARGV[7] ~= '' and ARGV[7] ~= ARGV[8] then
  old = P .. 'h:' .. ARGV[7]
end
local before, bu, ba = redis.call('HLEN', VIS), today_count('u'), today_count('a')
local function inc(m)
  local vk = vkof(m)
  if redis.call('HINCRBY', VIS, vk, 1) == 1 then
    today_add(vk)
  end
end
local function dec(m)
  local vk = vkof(m)
  if redis.call('HINCRBY', VIS, vk, -1) <= 0 then
    redis.call('HDEL', VIS, vk)
  end
end
local want = {}
for i = 10, #ARGV do
  want[ARGV[i]] = true
end
for _, m in ipairs(redis.call('SMEMBERS', new)) do
  if not want[m] then
    redis.call('SREM', new, m)
    dec(m)
  end
end
for i = 10, #ARGV do
  local m = ARGV[i]
  if redis.call('SISMEMBER', new, m) == 1 then
    if old and redis.call('SREM', old, m) == 1 then
      dec(m)
    end
  elseif old and redis.call('SMOVE', old, new, m) == 1 then
    -- moved from the earlier lease: still the same source
  else
    redis.call('SADD', new, m)
    if redis.call('ZREM', TTL, m) == 0 then
      inc(m)
    end
  end
end
if old then
  for _, m in ipairs(redis.call('SMEMBERS', old)) do
    dec(m)
  end
  redis.call('DEL', old)
end
local after = redis.call('HLEN', VIS)
local changed = 0
if after ~= before or today_count('u') ~= bu or today_count('a') ~= ba then
  if after >= before then
    publish_presence('visitor_joined', true)
  else
    publish_presence('visitor_left', true)
  end
  changed = 1
end
redis.call('PEXPIRE', META, METATTL)
return result(changed, 0)
`

// publishScript publishes ARGV[7], the JSON of an event. It returns the
// event's seq and epoch.
const publishScript = `
local s = append(':' .. ARGV[7])
redis.call('PEXPIRE', META, METATTL)
return {s, epoch()}
`

// historyScript returns {1, payload...} with the events after seq ARGV[2]
// of epoch ARGV[1], or {0} when they are not all in the history any more,
// or when there are more than ARGV[3] of them (ARGV[3] > 0). It reads only.
const historyScript = `
local META = KEYS[1]
local LOG = string.sub(META, 1, -2) .. 'l'
local v = redis.call('HMGET', META, 'e', 's')
if v[1] ~= ARGV[1] then
  return {0}
end
local after, s = tonumber(ARGV[2]), tonumber(v[2] or '0')
if after > s then
  return {0}
end
if after == s then
  return {1}
end
local limit = tonumber(ARGV[3] or '0')
if limit > 0 and s - after > limit then
  return {0}
end
local es = redis.call('XRANGE', LOG, string.format('%d', after + 1), '+')
if #es == 0 or tonumber(string.match(es[1][1], '^(%d+)-')) ~= after + 1 then
  return {0}
end
local out = {1}
for _, e in ipairs(es) do
  out[#out + 1] = e[2][2]
end
return out
`

// revokeScript flips the live session KEYS[1] to revoked and announces it
// on channel ARGV[2]. ARGV[1] now (ms), ARGV[3] the session id. It returns
// 0 when there is no live session to revoke.
const revokeScript = `
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 1) ~= 'L' then
  return 0
end
local exp = tonumber(string.match(v, '^L(%d+):'))
if not exp or tonumber(ARGV[1]) >= exp then
  return 0
end
redis.call('SET', KEYS[1], 'R' .. string.sub(v, 2), 'KEEPTTL')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`

// claimScript claims up to ARGV[3] members of the sorted set KEYS[1] whose
// score is due (<= ARGV[1]) by moving their score to ARGV[2]; other nodes'
// reapers then leave them alone until that time passes. It touches one
// (global) key, which is fine on a cluster.
const claimScript = `
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(ms) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m)
end
return ms
`

// unclaimScript removes the members ARGV[2..] of KEYS[1] whose score is
// still the claim ARGV[1] (a member that was given an earlier score in the
// meantime keeps it).
const unclaimScript = `
local n = 0
for i = 2, #ARGV do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
`

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
}

func newScripts(historyIdle, metaIdle int64) *scripts {
	r := strings.NewReplacer(
		"$LIMIT", strconv.Itoa(ExactToday),
		"$HLLS", strconv.Itoa(todayHLLs),
		"$HISTSIZE", strconv.Itoa(HistorySize),
		"$HISTAGE", strconv.FormatInt(HistoryAge.Milliseconds(), 10),
		"$MAXHIST", strconv.Itoa(MaxHistory),
		"$LOGTTL", strconv.FormatInt(historyIdle, 10),
		"$METATTL", strconv.FormatInt(metaIdle, 10),
		"$EXPIREMAX", strconv.Itoa(maxPerRun),
	)
	pre := r.Replace(prelude)
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
