-- A memory miss asks the shared tier (see cluster/tier.rs).
-- KEYS: object hash, fill lock, pass mark, purge marks, soft-purge marks
-- ARGV: variant, claim ("1": take the lock if free), token, lock lifetime (ms), url hash
-- Returns {kind, blob, soft (us), now (us), lock holder}; kind: hit, pass, claimed, locked, miss
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
local function num(v) return tonumber(v or '0') or 0 end
local v = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[1] .. ':t', ARGV[1] .. ':g')
if v[1] then
  -- purged when a purge of everything, of its URL or of one of its tags came after its fetch
  -- began; stale when a soft purge did
  local stored = num(v[2])
  local targets = {'a', 'u' .. ARGV[5]}
  for tag in string.gmatch(v[3] or '', '[^\n]+') do targets[#targets + 1] = 't' .. tag end
  local purged, soft = 0, 0
  for _, m in ipairs(targets) do
    purged = math.max(purged, num(redis.call('ZSCORE', KEYS[4], m)))
    soft = math.max(soft, num(redis.call('ZSCORE', KEYS[5], m)))
  end
  if stored > purged then
    if soft < stored then soft = 0 end
    return {'hit', v[1], string.format('%.0f', soft), now, ''}
  end
  redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. ':t', ARGV[1] .. ':g')
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
