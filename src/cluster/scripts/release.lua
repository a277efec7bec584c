-- A fill gives up its lock (see cluster/tier.rs).
-- KEYS: fill lock, pass mark; ARGV: token, pass ("1": the answer was not storable), pass lifetime (ms)
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1', 'PX', ARGV[3]) end
return 1
