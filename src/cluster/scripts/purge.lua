-- A purge is applied to the shared tier and published to every node, in one atomic step
-- (see cluster.rs). A purge is a mark in a sorted set (lacquer:marks, or lacquer:softmarks for
-- a soft purge) scored by the tier's clock: an object whose fetch began before a mark that
-- covers it is never served (lookup.lua) nor written (store.lua).
-- ARGV: node, order (JSON), stream length, mark horizon (ms), soft ("1"), then targets:
--   u<url hash>   one URL, all its variants
--   t<tag>        every object with the tag
--   a             everything (also prefixes, bans and tag patterns, which the tier cannot match)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nows = string.format('%.0f', now)
local soft = ARGV[5] == '1'
local marks = soft and 'lacquer:softmarks' or 'lacquer:marks'
for i = 6, #ARGV do
  redis.call('ZADD', marks, nows, ARGV[i])
  if not soft and string.sub(ARGV[i], 1, 1) == 'u' then
    redis.call('DEL', 'lacquer:o:' .. string.sub(ARGV[i], 2))
  end
end
-- a mark older than every object it could cover is dropped
local keep_ms = math.max(tonumber(ARGV[4]), tonumber(redis.call('GET', 'lacquer:maxlife') or '0') or 0)
local cutoff = '(' .. string.format('%.0f', now - keep_ms * 1000)
redis.call('ZREMRANGEBYSCORE', 'lacquer:marks', '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', 'lacquer:softmarks', '-inf', cutoff)
return redis.call('XADD', 'lacquer:purges', 'MAXLEN', '~', ARGV[3], '*', 'node', ARGV[1], 'order', ARGV[2])
