-- The mailbox series' epoch, started if missing (a new store, or one that lost its data:
-- ids then start over, under an epoch clients have not seen).
--
-- KEYS[1] the store's series hash. ARGV[1] the epoch to start if it has none.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
return epoch
