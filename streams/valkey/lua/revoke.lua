-- revoke.lua: see the comment of its variable in ../scripts.go.
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
