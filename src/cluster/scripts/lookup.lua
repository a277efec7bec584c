-- A memory miss asks the shared tier (see cluster/tier.rs).
-- KEYS: object hash, fill lock, pass mark, purge marks, soft-purge marks
-- ARGV: variant, fresh only ("1": a stale copy is of no use), token, lock lifetime (ms),
--       url hash, this node's token prefix
-- Returns {kind, blob, soft (us), now (us), lock holder}; kind: hit, stale (fresh only, and
-- the copy is not), pass, claimed (the lock is this node's now), locked (another node's)
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = string.format('%.0f', now_us)
local now_ms = math.floor(now_us / 1000)
local function num(v) return tonumber(v or '0') or 0 end
local f = ARGV[1]
local v = redis.call('HMGET', KEYS[1], f, f .. ':t', f .. ':g', f .. ':e', f .. ':f')
if v[1] then
  local stored = num(v[2])
  -- gone when past its own lifetime, or when a purge of everything, of its URL or of one of
  -- its tags came after its fetch began; stale when a soft purge did
  if num(v[4]) > now_ms then
    local targets = {'a', 'u' .. ARGV[5]}
    for tag in string.gmatch(v[3] or '', '[^\n]+') do targets[#targets + 1] = 't' .. tag end
    local purged, soft = 0, 0
    for _, m in ipairs(targets) do
      purged = math.max(purged, num(redis.call('ZSCORE', KEYS[4], m)))
      soft = math.max(soft, num(redis.call('ZSCORE', KEYS[5], m)))
    end
    if stored > purged then
      if soft < stored then soft = 0 end
      if ARGV[2] ~= '1' or (soft == 0 and num(v[5]) > now_ms) then
        return {'hit', v[1], string.format('%.0f', soft), now, ''}
      end
      return {'stale', '', '0', now, ''}
    end
  end
  redis.call('HDEL', KEYS[1], f, f .. ':t', f .. ':g', f .. ':e', f .. ':f')
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'pass', '', '0', now, ''}
end
-- free, or this node's own (an earlier fill of this node that is ending): take it
local holder = redis.call('GET', KEYS[2])
if not holder or string.sub(holder, 1, #ARGV[6]) == ARGV[6] then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return {'claimed', '', '0', now, ARGV[3]}
end
return {'locked', '', '0', now, holder}
