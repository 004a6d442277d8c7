-- record.lua: history_record(old, new) records a change of the present
-- count in the community's history, and history_day(n) starts the day's
-- record at a day roll-over (../history.go has the layout and the maths).
--
-- The records of the latest bucket of each step live together in one key,
-- CUR, read and written once per change (struct-packed doubles, exact for
-- integers up to 2^53); when a change comes in a later bucket, the record
-- of the bucket left behind is written to a key of its own, once, with its
-- expiry.
local CUR, HIST = P .. 'r:c', P .. 'r:'
-- How long a record outlives the write of its own key (ms): its step's
-- retention and two buckets; CUR, a day record's time after its day began.
local HISTKEEP = {$HISTKEEPM, $HISTKEEPH, $HISTKEEPD}
local HISTKIND = {'m', 'h', 'd'}
-- CUR holds 25 numbers: at offsets 0 (minute), 7 (hour) and 14 (day) a
-- record's start, first, peak, peak at, area, last and count, and for the
-- day the day's authenticated and anonymous visitors after the last change
-- and at its start; start 0: none yet. A bucket's own key holds its record
-- without the start.
local HISTAT = {0, 7, 14}
local HISTFMT = {'<dddddd', '<dddddd', '<dddddddddd'}
local CURFMT = '<' .. string.rep('d', 25)

-- hist_cur returns CUR's numbers and whether CUR needs its expiry set.
local function hist_cur()
  local v = redis.call('GET', CUR)
  if v then
    return {struct.unpack(CURFMT, v)}, false
  end
  local x = {}
  for i = 1, 25 do
    x[i] = 0
  end
  return x, true
end

-- hist_bucket makes x's record of step i that of the bucket starting at
-- start: if it is of an earlier bucket, it writes that record to its
-- bucket's key and starts the new one (the count was old until now). A
-- start that is not later than the record's (a clock that stepped back, or
-- a node behind another) keeps the record. It returns the record's offset
-- and whether it started a new one.
local function hist_bucket(x, i, start, old)
  local o = HISTAT[i]
  local s = x[o + 1]
  if s >= start then
    return o, false
  end
  if s ~= 0 then
    redis.call('SET', HIST .. HISTKIND[i] .. ':' .. string.format('%d', s),
      struct.pack(HISTFMT[i], unpack(x, o + 2, o + (i == 3 and 11 or 7))), 'PX', HISTKEEP[i])
  end
  x[o + 1], x[o + 2], x[o + 3], x[o + 4], x[o + 5], x[o + 6], x[o + 7] = start, old, old, start, 0, start, old
  if i == 3 then
    x[o + 8], x[o + 9], x[o + 10], x[o + 11] = 0, 0, 0, 0
  end
  return o, true
end

-- hist_change records the change of the count to new at NOW in the record
-- at offset o of x: the maths of streams.HistoryRecord.Change.
local function hist_change(x, o, new)
  if NOW > x[o + 6] then
    x[o + 5] = x[o + 5] + x[o + 7] * (NOW - x[o + 6])
    x[o + 6] = NOW
  end
  x[o + 7] = new
  if NOW <= x[o + 1] then
    x[o + 3], x[o + 4] = new, x[o + 1]
  elseif new > x[o + 3] then
    x[o + 3], x[o + 4] = new, NOW
  end
end

local function hist_save(x, expire)
  if expire then
    redis.call('SET', CUR, struct.pack(CURFMT, unpack(x, 1, 25)), 'PX', HISTKEEP[3])
  else
    redis.call('SET', CUR, struct.pack(CURFMT, unpack(x, 1, 25)), 'KEEPTTL')
  end
end

local function history_record(old, new)
  local x, expire = hist_cur()
  if old ~= new then
    hist_change(x, hist_bucket(x, 1, NOW - NOW % 60000, old), new)
    hist_change(x, hist_bucket(x, 2, MID + math.floor((NOW - MID) / 3600000) * 3600000, old), new)
  end
  local o, day = hist_bucket(x, 3, MID, old)
  hist_change(x, o, new)
  x[o + 8], x[o + 9] = today_count('u'), today_count('a')
  hist_save(x, expire or day)
end

-- history_day starts the record of the day that began at MID with the n
-- visitors present then (today's figures are theirs), unless it has one.
local function history_day(n)
  local x, expire = hist_cur()
  local o, day = hist_bucket(x, 3, MID, n)
  if day then
    local u, a = today_count('u'), today_count('a')
    x[o + 8], x[o + 9], x[o + 10], x[o + 11] = u, a, u, a
    hist_save(x, true)
  end
end
