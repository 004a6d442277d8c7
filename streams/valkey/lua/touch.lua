-- touch.lua: see the comment of its variable in ../scripts.go.
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
