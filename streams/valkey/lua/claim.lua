-- claim.lua: see the comment of its variable in ../scripts.go.
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(ms) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m)
end
return ms
