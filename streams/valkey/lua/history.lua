-- history.lua: see the comment of its variable in ../scripts.go.
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
