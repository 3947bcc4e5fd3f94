-- Publishes on a channel in one step: takes the channel's next offset, appends the
-- publication to its history when it keeps one, and PUBLISHes it on its topic. Redis runs
-- a script alone, so offsets follow history order on every node.
--
-- KEYS[1] the channel's meta hash, KEYS[2] its history stream.
-- ARGV[1] the epoch to start if the channel has none; ARGV[2] the publication's JSON
-- after its opening `{"offset":N`; ARGV[3] the history size (0: none kept); ARGV[4] how
-- long meta and history live, in milliseconds (the history's TTL, which reads also expire
-- entries by, when it keeps one); ARGV[5] the topic.
-- Returns {epoch, offset}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local fresh = not epoch
if fresh then
  epoch = ARGV[1]
end
-- The first write: past maxmemory Redis refuses it before anything changed (a script is
-- only checked until its first write), so a refusal leaves no trace.
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
if fresh then
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- A history left without its meta belongs to an epoch nobody can ask for any more.
  redis.call('DEL', KEYS[2])
end
local json = '{"offset":' .. string.format('%d', top) .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', top), 'p', json)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('HSET', KEYS[1], 'ttl', ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], 'P' .. epoch .. ' ' .. json)
return {epoch, top}
