-- prelude.lua: the helpers every community script starts with (../scripts.go).
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

-- $RECORD

local function publish_presence(typ, resync)
  local n = redis.call('HLEN', VIS)
  -- The count at the last presence event: a resync may move it by more
  -- than one.
  local old = tonumber(redis.call('HGET', META, 'n') or '0')
  redis.call('HSET', META, 'n', n)
  history_record(old, n)
  outbox_presence(old, n)
  -- Today's peak: the highest count since midnight, and when it was first
  -- reached (roll() starts a day with the count present at midnight).
  local pk = redis.call('HMGET', META, 'pk', 'pt')
  local peak, pat = tonumber(pk[1] or '0'), pk[2] or string.format('%d', math.floor(MID / 1000))
  if n > peak then
    peak, pat = n, TSEC
    redis.call('HSET', META, 'pk', peak, 'pt', pat)
  end
  local json = '{"type":"' .. typ .. '","count":' .. n ..
    ',"today":{"authenticated_visitors":' .. today_count('u') ..
    ',"anonymous_visitors":' .. today_count('a') .. '}' ..
    ',"peak":{"count":' .. peak .. ',"at":' .. pat .. '}'
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
  -- The new day's peak so far: the visitors present at midnight.
  redis.call('HSET', META, 'pk', today_count('u') + today_count('a'), 'pt', string.format('%d', math.floor(MID / 1000)))
  -- The new day's history record: the count present at midnight.
  if n > 0 then
    history_day(n)
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
-- s), epoch, peak, peak time, and the webhook outbox's outbox_result().
local function result(changed, extra)
  local v = redis.call('HMGET', META, 's', 'c', 'e', 'pk', 'pt')
  return {changed, redis.call('HLEN', VIS), v[1] or '0', today_count('u'), today_count('a'), extra,
    v[2] or '0', v[3] or '', v[4] or '0', v[5] or string.format('%d', math.floor(MID / 1000)),
    outbox_result()}
end
