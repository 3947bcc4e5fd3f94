-- Stores a private message for a user, checking the mailbox's bounds and storing it in one
-- step, so two nodes pushing at once cannot both take the last place.
--
-- KEYS[1] the store's series hash (`id`, `epoch`), KEYS[2] the user's message stream,
-- KEYS[3] the user's counts hash.
-- ARGV[1] the epoch to start if the series has none; ARGV[2] now (Unix ms); ARGV[3] the
-- message TTL in ms; ARGV[4] the sender's tag (`s`: the server API, `u` + user id);
-- ARGV[5] mailbox.size; ARGV[6] mailbox.per_sender; ARGV[7] mailbox.server_size;
-- ARGV[8] `1` if the user is online; ARGV[9] the message's JSON after `{"mailbox":N`;
-- ARGV[10] the user's topic in a group of nodes ('' on one node): the user is online if a
-- node watches it, and the message is published there (`M` + its JSON) in this same step,
-- so live messages reach the nodes in id order.
-- Returns {epoch or '', id, quota, nodes}: id 0 when refused; quota 0 none, 1
-- mailbox.size, 2 mailbox.per_sender, 3 mailbox.server_size; nodes the number of nodes
-- the message was published to.
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local tag = ARGV[4]
local server = tag == 's'
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local counts = redis.call('HMGET', KEYS[3], '@epoch', '#users', '#server', tag)
-- Messages stored under another series (the series hash was lost while this mailbox was
-- not) have ids that may come again: they are dropped below, and count for nothing.
local stale = counts[1] and counts[1] ~= epoch
local users, servers, mine = 0, 0, 0
local expired = {}
-- Expired messages, by sender tag: they no longer count.
local gone = {}
if not stale then
  users = tonumber(counts[2]) or 0
  servers = tonumber(counts[3]) or 0
  mine = tonumber(counts[4]) or 0
  -- Messages expire in id order (one TTL for all), so the expired ones are at the front;
  -- the mailbox's bounds bound how many.
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', 100)
    local live = false
    for _, entry in ipairs(batch) do
      local fields = entry[2]
      local sender, expires
      for i = 1, #fields, 2 do
        if fields[i] == 's' then sender = fields[i + 1] end
        if fields[i] == 'e' then expires = tonumber(fields[i + 1]) end
      end
      if expires and expires > now then
        live = true
        break
      end
      expired[#expired + 1] = entry[1]
      if sender then
        gone[sender] = (gone[sender] or 0) + 1
        if sender == 's' then
          servers = servers - 1
        else
          users = users - 1
        end
      end
    end
    if live or #batch < 100 then break end
    from = string.format('%d-0', tonumber(string.match(batch[#batch][1], '^(%d+)')) + 1)
  end
  mine = mine - (gone[tag] or 0)
end
local quota = 0
if server then
  if servers >= tonumber(ARGV[7]) then quota = 3 end
elseif mine >= tonumber(ARGV[6]) then
  quota = 2
elseif users >= tonumber(ARGV[5]) then
  quota = 1
end
local topic = ARGV[10] or ''
local online = ARGV[8] == '1'
if topic ~= '' and not online then
  online = redis.call('PUBSUB', 'NUMSUB', topic)[2] > 0
end
if quota ~= 0 and not online then
  return {epoch or '', 0, quota, 0}
end
-- The first write (past maxmemory Redis refuses it before any change: see publish.lua).
local id = redis.call('HINCRBY', KEYS[1], 'id', 1)
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
if stale then
  redis.call('DEL', KEYS[2], KEYS[3])
elseif #expired > 0 then
  for i = 1, #expired, 1000 do
    redis.call('XDEL', KEYS[2], unpack(expired, i, math.min(i + 999, #expired)))
  end
  redis.call('HSET', KEYS[3], '#users', users, '#server', servers)
  for sender, n in pairs(gone) do
    if sender ~= 's' and redis.call('HINCRBY', KEYS[3], sender, -n) <= 0 then
      redis.call('HDEL', KEYS[3], sender)
    end
  end
end
local json = '{"mailbox":' .. string.format('%d', id) .. ARGV[9]
if quota == 0 then
  redis.call('XADD', KEYS[2], string.format('%d-0', id), 'm', json, 's', tag,
    'e', string.format('%d', now + ttl))
  if server then
    redis.call('HINCRBY', KEYS[3], '#server', 1)
  else
    redis.call('HINCRBY', KEYS[3], '#users', 1)
    redis.call('HINCRBY', KEYS[3], tag, 1)
  end
  redis.call('HSET', KEYS[3], '@epoch', epoch)
  -- The mailbox lives as long as its newest message: an abandoned one goes by itself.
  for k = 2, 3 do
    if redis.call('PTTL', KEYS[k]) < ttl then
      redis.call('PEXPIRE', KEYS[k], ttl)
    end
  end
end
local nodes = 0
if topic ~= '' then
  nodes = redis.call('PUBLISH', topic, 'M' .. json)
end
return {epoch, id, quota, nodes}
