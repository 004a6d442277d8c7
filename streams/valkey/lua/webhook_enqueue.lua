-- webhook_enqueue.lua: see the comment of its variable in ../scripts.go.
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return redis.call('HEXISTS', KEYS[1], ARGV[1])
