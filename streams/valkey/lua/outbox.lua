-- outbox.lua: outbox_presence(old, new) queues the webhook events of a
-- change of the present count (../outbox.go); outbox_result() is the last
-- value of result(). Both do nothing unless the bus's webhooks are on.
local WEBHOOKS, WHMAX, WHKEEP = $WEBHOOKS, $WHMAX, $WHKEEP
local OUTBOX = P .. 'w'

local function outbox_presence(old, new)
  if WEBHOOKS == 0 then
    return
  end
  local typ
  if old == 0 and new > 0 then
    typ = 'community_occupied'
  elseif old > 0 and new == 0 then
    typ = 'community_vacated'
  else
    return
  end
  if redis.call('HLEN', OUTBOX) >= WHMAX then
    return
  end
  -- The id of the presence event that announces the change (append
  -- assigns the next seq), after the community: unique cluster-wide.
  local id = string.sub(P, 5, -3) .. ':' .. epoch() .. '-' .. (seq() + 1)
  redis.call('HSET', OUTBOX, id, TSEC .. ':' .. typ .. ':{"count":' .. new .. '}')
  redis.call('PEXPIRE', OUTBOX, WHKEEP)
end

-- outbox_result returns {day, id...}: day is the current day the first
-- time a run sees visitors in it (the node notes the community as visited
-- that day), else ''; the ids are the community's pending events, which
-- the node (re-)indexes, so that an event whose indexing a dying node
-- missed is indexed at the community's next operation.
local function outbox_result()
  if WEBHOOKS == 0 then
    return {}
  end
  local out = {''}
  if redis.call('HLEN', VIS) > 0 and redis.call('HGET', META, 'wv') ~= curday then
    redis.call('HSET', META, 'wv', curday)
    out[1] = curday
  end
  if redis.call('EXISTS', OUTBOX) == 1 then
    for _, id in ipairs(redis.call('HKEYS', OUTBOX)) do
      out[#out + 1] = id
    end
  end
  return out
end
