-- publish.lua: see the comment of its variable in ../scripts.go.
local s = append(':' .. ARGV[7])
redis.call('PEXPIRE', META, METATTL)
return {s, epoch()}
