-- A fill writes its variant: compare and set (see cluster/tier.rs).
-- KEYS: object hash, fill lock, purged:<url>, purged:all, pass mark
-- ARGV: variant, blob, fetch start (us), lock token ("" none), lifetime (ms), horizon (us),
--       url hash, tags...
-- Returns stored, purged (a purge that covers it came after the fetch began) or older (a
-- fetch that began later stored it first).
local function num(v) return tonumber(v or '0') or 0 end
local function unlock()
  if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = tonumber(ARGV[3])
-- a fetch older than the purge marks' lifetime cannot be compared: not stored
if not start or now - start > tonumber(ARGV[6]) then unlock() return 'purged' end
local purged = math.max(num(redis.call('GET', KEYS[3])), num(redis.call('GET', KEYS[4])))
local soft = 0
for i = 8, #ARGV do
  purged = math.max(purged, num(redis.call('GET', 'lacquer:purged:tag:' .. ARGV[i])))
  soft = math.max(soft, num(redis.call('GET', 'lacquer:soft:tag:' .. ARGV[i])))
end
if purged >= start then unlock() return 'purged' end
if num(redis.call('HGET', KEYS[1], ARGV[1] .. ':t')) > start then unlock() return 'older' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':t', ARGV[3])
if soft > start and soft > num(redis.call('HGET', KEYS[1], 'soft')) then
  redis.call('HSET', KEYS[1], 'soft', string.format('%.0f', soft))
end
local life = tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < life then redis.call('PEXPIRE', KEYS[1], life) end
for i = 8, #ARGV do
  local k = 'lacquer:tag:' .. ARGV[i]
  redis.call('SADD', k, ARGV[7])
  if redis.call('PTTL', k) < life then redis.call('PEXPIRE', k, life) end
end
redis.call('DEL', KEYS[5])
unlock()
return 'stored'
