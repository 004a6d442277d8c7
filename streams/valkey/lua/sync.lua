-- sync.lua: see the comment of its variable in ../scripts.go.
settle()
if tonumber(ARGV[9]) > seq() then
  epoch()
  redis.call('HSET', META, 's', ARGV[9])
end
if ARGV[8] == '' then
  return result(0, 0)
end
local new = P .. 'h:' .. ARGV[8]
local old
if ARGV[7] ~= '' and ARGV[7] ~= ARGV[8] then
  old = P .. 'h:' .. ARGV[7]
end
local before, bu, ba = redis.call('HLEN', VIS), today_count('u'), today_count('a')
local function inc(m)
  local vk = vkof(m)
  if redis.call('HINCRBY', VIS, vk, 1) == 1 then
    today_add(vk)
  end
end
local function dec(m)
  local vk = vkof(m)
  if redis.call('HINCRBY', VIS, vk, -1) <= 0 then
    redis.call('HDEL', VIS, vk)
  end
end
local want = {}
for i = 10, #ARGV do
  want[ARGV[i]] = true
end
for _, m in ipairs(redis.call('SMEMBERS', new)) do
  if not want[m] then
    redis.call('SREM', new, m)
    dec(m)
  end
end
for i = 10, #ARGV do
  local m = ARGV[i]
  if redis.call('SISMEMBER', new, m) == 1 then
    if old and redis.call('SREM', old, m) == 1 then
      dec(m)
    end
  elseif old and redis.call('SMOVE', old, new, m) == 1 then
    -- moved from the earlier lease: still the same source
  else
    redis.call('SADD', new, m)
    if redis.call('ZREM', TTL, m) == 0 then
      inc(m)
    end
  end
end
if old then
  for _, m in ipairs(redis.call('SMEMBERS', old)) do
    dec(m)
  end
  redis.call('DEL', old)
end
local after = redis.call('HLEN', VIS)
local changed = 0
if after ~= before or today_count('u') ~= bu or today_count('a') ~= ba then
  if after >= before then
    publish_presence('visitor_joined', true)
  else
    publish_presence('visitor_left', true)
  end
  changed = 1
end
redis.call('PEXPIRE', META, METATTL)
return result(changed, 0)
