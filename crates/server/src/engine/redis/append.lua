-- Stores a publication whose offset the caller chose (Store::append), in the layout the
-- publish script writes: top = the highest offset, entry `OFFSET-0`.
--
-- KEYS[1] the channel's meta hash, KEYS[2] its history stream.
-- ARGV[1] the caller's epoch; ARGV[2] the offset; ARGV[3] the publication's JSON;
-- ARGV[4] the history size; ARGV[5] the history's TTL in milliseconds.
-- Returns {1, epoch} when stored (or already there), {0, stored epoch} when the channel is
-- stored under another epoch.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and epoch ~= ARGV[1] then
  return {0, epoch}
end
local offset = tonumber(ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'top')) or 0
-- The first write (see publish.lua: past maxmemory it is refused before any change).
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'ttl', ARGV[5])
if offset > top then
  redis.call('HSET', KEYS[1], 'top', ARGV[2])
end
if not epoch then
  redis.call('DEL', KEYS[2])
end
-- A stream only grows at its end: an offset at or below the last entry is already
-- stored (the hub storing again what it holds) or older than what is kept.
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local newest = last and tonumber(string.match(last[1], '^(%d+)')) or 0
if offset > newest then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], ARGV[2] .. '-0', 'p', ARGV[3])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, ARGV[1]}
