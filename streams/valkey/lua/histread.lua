-- histread.lua: see the comment of its variable in ../scripts.go.
local P = string.sub(KEYS[1], 1, -2)
local pre = P .. 'r:' .. ARGV[1] .. ':'
local out = {redis.call('HLEN', P .. 'v'), redis.call('GET', P .. 'r:c') or ''}
if #ARGV > 1 then
  local keys = {}
  for i = 2, #ARGV do
    keys[i - 1] = pre .. ARGV[i]
  end
  local vals = redis.call('MGET', unpack(keys))
  for i = 1, #vals do
    out[i + 2] = vals[i] or ''
  end
end
return out
