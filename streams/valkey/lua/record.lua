-- record.lua: history_record(old, new) records a change of the present
-- count in the community's history buckets, and history_day(n) starts the
-- day's record at a day roll-over (../history.go has the layout).
local HIST = P .. 'r:'
-- How long a record outlives the change that created it (ms): its step's
-- retention and two buckets.
local HISTKEEP = {m = $HISTKEEPM, h = $HISTKEEPH, d = $HISTKEEPD}

local function hist_key(kind, start)
  return HIST .. kind .. ':' .. string.format('%d', start)
end

-- hist_put stores record r of kind's bucket starting at start: r is
-- {first, peak, peak at, area, last, count} and, for days, the day's
-- authenticated and anonymous visitors after the last change and at the
-- day's start. A new record gets its expiry; an existing one keeps it.
local function hist_put(kind, start, r, new)
  local v = string.format('%d,%d,%d,%d,%d,%d', r[1], r[2], r[3], r[4], r[5], r[6])
  if r[7] then
    v = v .. string.format(',%d,%d,%d,%d', r[7], r[8], r[9], r[10])
  end
  if new then
    redis.call('SET', hist_key(kind, start), v, 'PX', HISTKEEP[kind])
  else
    redis.call('SET', hist_key(kind, start), v, 'KEEPTTL')
  end
end

-- hist_change records the change of the count to new at NOW in the record
-- of kind's bucket starting at start, creating it (the count was old from
-- the bucket's start until now) if the bucket has none; the maths of
-- streams.HistoryRecord.Change.
local function hist_change(kind, start, old, new)
  local v = redis.call('GET', hist_key(kind, start))
  local r = {}
  if v then
    for x in string.gmatch(v, '[^,]+') do
      r[#r + 1] = tonumber(x)
    end
  else
    r = {old, old, start, 0, start, old}
    if kind == 'd' then
      r[7], r[8], r[9], r[10] = 0, 0, 0, 0
    end
  end
  if NOW > r[5] then
    r[4] = r[4] + r[6] * (NOW - r[5])
    r[5] = NOW
  end
  r[6] = new
  if NOW <= start then
    r[2], r[3] = new, start
  elseif new > r[2] then
    r[2], r[3] = new, NOW
  end
  if kind == 'd' then
    r[7], r[8] = today_count('u'), today_count('a')
  end
  hist_put(kind, start, r, not v)
end

local function history_record(old, new)
  if old ~= new then
    hist_change('m', NOW - NOW % 60000, old, new)
    hist_change('h', MID + math.floor((NOW - MID) / 3600000) * 3600000, old, new)
  end
  hist_change('d', MID, old, new)
end

-- history_day starts the record of the day that began at MID with the n
-- visitors present then (today's figures are theirs), unless it has one.
local function history_day(n)
  if redis.call('EXISTS', hist_key('d', MID)) == 0 then
    local u, a = today_count('u'), today_count('a')
    hist_put('d', MID, {n, n, MID, 0, MID, n, u, a, u, a}, true)
  end
end
