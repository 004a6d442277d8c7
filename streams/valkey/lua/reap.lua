-- reap.lua: see the comment of its variable in ../scripts.go.
settle()
local held = P .. 'h:' .. ARGV[7]
local ms = redis.call('SPOP', held, tonumber(ARGV[8]))
local n = 0
for _, m in ipairs(ms) do
  n = n + drop(vkof(m))
end
return result(n, redis.call('SCARD', held))
