-- A purge is applied to the shared tier and published to every node, in one atomic step
-- (see cluster.rs). Purge marks (purged:..., soft:...) hold the tier's clock, so that a fill
-- whose fetch began before them is refused (store.lua).
-- ARGV: node, order (JSON), stream length, mark lifetime (ms), soft ("1"), then operations:
--   u<url hash>   one URL, all its variants
--   t<tag>        every object with the tag (fills in flight with it too)
--   a             everything (also prefixes, bans and tag patterns, which the tier cannot match)
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local soft = ARGV[5] == '1'
local life = ARGV[4]
for i = 6, #ARGV do
  local op, arg = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if op == 'u' then
    local o = 'lacquer:o:' .. arg
    if soft then
      redis.call('HSET', o, 'soft', now)
      if redis.call('PTTL', o) < 0 then redis.call('PEXPIRE', o, life) end
    else
      redis.call('DEL', o)
      redis.call('SET', 'lacquer:purged:' .. arg, now, 'PX', life)
    end
  elseif op == 't' then
    local members = redis.call('SMEMBERS', 'lacquer:tag:' .. arg)
    if soft then
      redis.call('SET', 'lacquer:soft:tag:' .. arg, now, 'PX', life)
      for _, m in ipairs(members) do
        local o = 'lacquer:o:' .. m
        if redis.call('EXISTS', o) == 1 then redis.call('HSET', o, 'soft', now) end
      end
    else
      redis.call('SET', 'lacquer:purged:tag:' .. arg, now, 'PX', life)
      for _, m in ipairs(members) do redis.call('DEL', 'lacquer:o:' .. m) end
      redis.call('DEL', 'lacquer:tag:' .. arg)
    end
  elseif op == 'a' then
    redis.call('SET', soft and 'lacquer:soft:all' or 'lacquer:purged:all', now)
  end
end
return redis.call('XADD', 'lacquer:purges', 'MAXLEN', '~', ARGV[3], '*', 'node', ARGV[1], 'order', ARGV[2])
