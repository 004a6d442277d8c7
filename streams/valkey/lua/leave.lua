-- leave.lua: see the comment of its variable in ../scripts.go.
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
