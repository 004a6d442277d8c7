-- snapshot.lua: see the comment of its variable in ../scripts.go.
settle()
redis.call('PEXPIRE', META, METATTL)
return result(0, 0)
