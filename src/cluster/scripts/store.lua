-- A fill writes its variant: compare and set (see cluster/tier.rs).
-- KEYS: object hash, fill lock, purge marks, pass mark, longest lifetime
-- ARGV: variant, blob, fetch start (us), lock token ("" none), lifetime (ms), horizon (us),
--       url hash, fresh until (Unix ms), tags...
-- Returns stored, purged (a purge that covers it came after the fetch began) or older (a
-- fetch that began later stored it first).
local function num(v) return tonumber(v or '0') or 0 end
local function unlock()
  if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = tonumber(ARGV[3])
-- a fetch older than the purge marks are surely kept cannot be compared: not stored
if not start or now - start > tonumber(ARGV[6]) then unlock() return 'purged' end
local targets = {'a', 'u' .. ARGV[7]}
local tags = {}
for i = 9, #ARGV do
  targets[#targets + 1] = 't' .. ARGV[i]
  tags[#tags + 1] = ARGV[i]
end
local purged = 0
for _, m in ipairs(targets) do purged = math.max(purged, num(redis.call('ZSCORE', KEYS[3], m))) end
if purged >= start then unlock() return 'purged' end
if num(redis.call('HGET', KEYS[1], ARGV[1] .. ':t')) > start then unlock() return 'older' end
local life = tonumber(ARGV[5])
local f = ARGV[1]
redis.call('HSET', KEYS[1], f, ARGV[2], f .. ':t', ARGV[3], f .. ':g', table.concat(tags, '\n'),
  f .. ':e', string.format('%.0f', math.floor(now / 1000) + life), f .. ':f', ARGV[8])
if redis.call('PTTL', KEYS[1]) < life then redis.call('PEXPIRE', KEYS[1], life) end
-- purge marks are kept as long as the longest-lived object could be
if life > num(redis.call('GET', KEYS[5])) then redis.call('SET', KEYS[5], life) end
redis.call('DEL', KEYS[4])
unlock()
return 'stored'
