-- Reads fields of a hash and a range of a stream in one step: a channel's position with
-- the first chunk of its history, so `top` is never behind the newest entry read and both
-- belong to one epoch. (MULTI would do as much, but past maxmemory Redis refuses to queue
-- commands in a transaction, reads included; a script that only reads still runs.)
--
-- KEYS[1] the hash, KEYS[2] the stream.
-- ARGV[1] XRANGE or XREVRANGE, ARGV[2] its start, ARGV[3] its end, ARGV[4] its COUNT,
-- ARGV[5..] the hash's fields.
-- Returns {the fields' values, the entries}.
local values = redis.call('HMGET', KEYS[1], unpack(ARGV, 5))
local entries = redis.call(ARGV[1], KEYS[2], ARGV[2], ARGV[3], 'COUNT', ARGV[4])
return {values, entries}
