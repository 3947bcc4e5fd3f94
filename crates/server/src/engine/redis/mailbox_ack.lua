-- Removes a user's messages up to and including an id, keeping the counts right.
--
-- KEYS[1] the store's series hash, KEYS[2] the user's message stream, KEYS[3] the user's
-- counts hash. ARGV[1] the last id removed, as a stream id (`ID-0`).
-- Returns the series' epoch ('' if it has none).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local stored = redis.call('HGET', KEYS[3], '@epoch')
-- Deletions come first: past maxmemory, a script that has not written yet is refused
-- its first HSET/HINCRBY, but deleting is how room comes back.
if stored and stored ~= epoch then
  redis.call('DEL', KEYS[2], KEYS[3])
  return epoch or ''
end
-- Bounded by the mailbox's bounds, which every push enforces.
local acked = redis.call('XRANGE', KEYS[2], '-', ARGV[1])
if #acked == 0 then
  return epoch or ''
end
local ids = {}
local gone = {}
for _, entry in ipairs(acked) do
  ids[#ids + 1] = entry[1]
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 's' then
      local tag = fields[i + 1]
      gone[tag] = (gone[tag] or 0) + 1
    end
  end
end
for i = 1, #ids, 1000 do
  redis.call('XDEL', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
if redis.call('XLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3])
  return epoch or ''
end
for tag, n in pairs(gone) do
  if tag == 's' then
    redis.call('HINCRBY', KEYS[3], '#server', -n)
  else
    redis.call('HINCRBY', KEYS[3], '#users', -n)
    if redis.call('HINCRBY', KEYS[3], tag, -n) <= 0 then
      redis.call('HDEL', KEYS[3], tag)
    end
  end
end
return epoch or ''
