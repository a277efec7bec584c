-- A memory miss asks the shared tier (see cluster/tier.rs).
-- KEYS: object hash, fill lock, pass mark, purged:all, soft:all
-- ARGV: variant, claim ("1": take the lock if free), token, lock lifetime (ms)
-- Returns {kind, blob, soft (us), now (us), lock holder}; kind: hit, pass, claimed, locked, miss
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local function num(v) return tonumber(v or '0') or 0 end
local blob = redis.call('HGET', KEYS[1], ARGV[1])
if blob then
  local stored = num(redis.call('HGET', KEYS[1], ARGV[1] .. ':t'))
  -- written by a fetch that began before the last purge of everything: gone
  if stored > num(redis.call('GET', KEYS[4])) then
    local soft = math.max(num(redis.call('HGET', KEYS[1], 'soft')), num(redis.call('GET', KEYS[5])))
    if soft <= stored then soft = 0 end
    return {'hit', blob, string.format('%.0f', soft), now, ''}
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'pass', '', '0', now, ''}
end
if ARGV[2] == '1' then
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
    return {'claimed', '', '0', now, ARGV[3]}
  end
  return {'locked', '', '0', now, redis.call('GET', KEYS[2]) or ''}
end
return {'miss', '', '0', now, ''}
