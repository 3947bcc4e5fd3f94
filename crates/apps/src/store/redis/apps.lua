-- The apps' store on Redis: every key and every operation, in one script.
--
-- ARGV[1] is the key base ("P:app:"), ARGV[2] the operation, ARGV[3..] its arguments.
-- Each call of a `Store` method is one run of this script, and Redis runs one script at a
-- time: every rule an operation checks holds for the write it makes, whichever node
-- calls (store/redis/mod.rs says why one script and not one per operation). The Rust
-- side puts a shebang line first: reads run a copy flagged `no-writes`, writes one
-- without, so a full Redis refuses a write before it starts rather than halfway.
--
-- Values are strings as Redis keeps them; integers that can pass 2^53 (offsets, times,
-- ids from callers) are compared as decimal strings (`lt`), never as Lua numbers. String
-- order is never Lua's `<` on strings, which follows the server's locale (strcoll): the
-- callers pass pairs already ordered, and sorted sets order bytewise.

local B = ARGV[1]
local A = ARGV

-- How long a session or invite outlives its expiry before Redis drops it by itself.
-- Expiry is decided by the caller's `now` against the stored `expires`, as in SQLite, and
-- `sweep` deletes what has expired: the TTL only collects what no sweep reached, so it
-- must not fire early when a node's clock runs ahead of the Redis host's.
local GRACE = 3600000
-- The longest TTL set (about 34 years), so a far expiry stays a valid PEXPIRE.
local MAX_TTL = 1099511627776

-- Keys. A family's fixed part ends in ':' and one variable part follows it; a fixed name
-- begins with no family's fixed part. So no two records share a key whatever user ids,
-- names or room names contain (they are binary safe, nothing is escaped).
local K = {}
function K.account(id) return B .. 'account:' .. id end     -- HASH name hash admin created
K.accounts = B .. 'accounts'                                  -- ZSET id (score 0: bytewise)
function K.session(hex) return B .. 'session:' .. hex end   -- HASH account | guest_id guest_name; created expires
function K.sessions(id) return B .. 'sessions:' .. id end   -- ZSET hex by created, per account
K.session_expiry = B .. 'expiry:sessions'                     -- ZSET hex..account by expires
function K.invite(hex) return B .. 'invite:' .. hex end     -- HASH admin bootstrap created expires [used_by]
K.invite_expiry = B .. 'expiry:invites'                       -- ZSET hex by expires (unused ones)
K.bootstrap = B .. 'invites:bootstrap'                        -- SET hex of unused bootstrap invites
function K.room(name) return B .. 'room:' .. name end       -- HASH topic creator created
K.rooms = B .. 'rooms'                                        -- ZSET name (score 0: bytewise)
K.room_counts = B .. 'roomcounts'                             -- HASH creator -> rooms created
function K.reads(user) return B .. 'reads:' .. user end     -- HASH room -> offset
K.dm_seq = B .. 'dmseq'                                       -- the last message id
function K.dm(id) return B .. 'dm:' .. id end               -- HASH lo hi sender ... late
function K.conv(lo, hi) return B .. 'conv:' .. #lo .. ':' .. lo .. hi end -- ZSET id by id
function K.convs(user) return B .. 'convs:' .. user end     -- ZSET peer by last id
function K.dm_reads(user) return B .. 'dmreads:' .. user end -- HASH peer -> id
function K.poll(id) return B .. 'poll:' .. id end           -- HASH fields, n, o:I text, c:I count
function K.votes(id) return B .. 'votes:' .. id end         -- HASH voter -> time|choices|name
function K.polls_of(owner) return B .. 'pollsby:' .. owner end -- ZSET id by created
K.open = B .. 'polls:open'                                    -- ZSET id by created (closed = 0)
K.due = B .. 'polls:due'                                      -- ZSET id by closes_at (open ones)
function K.online(node) return B .. 'online:' .. node end   -- SET user ids online on a node
K.online_nodes = B .. 'onlinenodes'                           -- ZSET node by expiry (Redis ms)

-- Whether decimal integer string `a` is less than `b` (no leading zeros, no "-0").
local function lt(a, b)
  local na, nb = a:byte(1) == 45, b:byte(1) == 45
  if na ~= nb then return na end
  if na then a, b = b:sub(2), a:sub(2) end
  if #a ~= #b then return #a < #b end
  for i = 1, #a do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return false
end

-- An integer as Redis arguments want it (Lua prints numbers with 14 digits).
local function int(x) return string.format('%.0f', x) end

local function set_ttl(key, expires, now)
  local ttl = tonumber(expires) - tonumber(now)
  if ttl < 0 then ttl = 0 end
  ttl = ttl + GRACE
  if ttl > MAX_TTL then ttl = MAX_TTL end
  redis.call('PEXPIRE', key, int(ttl))
end

local ops = {}

-- Accounts ------------------------------------------------------------------------------

-- id, name, hash, admin, now, invite (hex or '')
function ops.create_account()
  local id, name, hash, admin, now, invite = A[3], A[4], A[5], A[6], A[7], A[8]
  local ikey
  if invite ~= '' then
    ikey = K.invite(invite)
    local f = redis.call('HMGET', ikey, 'admin', 'used_by', 'expires')
    if not f[3] or f[2] or not lt(now, f[3]) then return {'invalid'} end
    if f[1] == '1' then admin = '1' end
  end
  local key = K.account(id)
  if redis.call('EXISTS', key) == 1 then return {'taken'} end
  redis.call('HSET', key, 'name', name, 'hash', hash, 'admin', admin, 'created', now)
  redis.call('ZADD', K.accounts, 0, id)
  if ikey then
    -- Used: kept (it is no longer valid) until its TTL, as SQLite keeps used invites.
    redis.call('HSET', ikey, 'used_by', id)
    redis.call('SREM', K.bootstrap, invite)
    redis.call('ZREM', K.invite_expiry, invite)
  end
  return {'ok', admin}
end

-- id -> {} | {id, name, admin, created}
function ops.account()
  local f = redis.call('HMGET', K.account(A[3]), 'name', 'admin', 'created')
  if not f[1] then return {} end
  return {A[3], f[1], f[2], f[3]}
end

-- id -> {} | {id, name, admin, created, hash}
function ops.account_with_hash()
  local f = redis.call('HMGET', K.account(A[3]), 'name', 'admin', 'created', 'hash')
  if not f[1] then return {} end
  return {A[3], f[1], f[2], f[3], f[4]}
end

-- -> {id, name, admin, created, ...} by id
function ops.accounts()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', K.accounts, 0, -1)) do
    local f = redis.call('HMGET', K.account(id), 'name', 'admin', 'created')
    if f[1] then
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      out[#out + 1] = f[3]
    end
  end
  return out
end

function ops.account_count()
  return redis.call('ZCARD', K.accounts)
end

-- Deletes every session of an account (capped by `max_per_account`, so bounded).
local function end_sessions(id)
  local zkey = K.sessions(id)
  for _, hex in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
    redis.call('DEL', K.session(hex))
    redis.call('ZREM', K.session_expiry, hex .. id)
  end
  redis.call('DEL', zkey)
end

-- id, hash -> 1 | 0
function ops.set_password()
  local key = K.account(A[3])
  local found = redis.call('EXISTS', key)
  if found == 1 then redis.call('HSET', key, 'hash', A[4]) end
  -- A new password ends every session: whoever had the old one is out.
  end_sessions(A[3])
  return found
end

-- id -> 1 | 0
function ops.remove_account()
  local id = A[3]
  end_sessions(id)
  redis.call('DEL', K.reads(id), K.dm_reads(id))
  redis.call('ZREM', K.accounts, id)
  return redis.call('DEL', K.account(id))
end

-- Sessions ------------------------------------------------------------------------------

-- hex, 'a' | 'g', id, guest name, now, expires, max per account
function ops.create_session()
  local hex, kind, id, name, now, expires = A[3], A[4], A[5], A[6], A[7], A[8]
  local key = K.session(hex)
  local member = hex
  if kind == 'a' then
    -- As SQLite's foreign key: a session names an account that exists.
    if redis.call('EXISTS', K.account(id)) == 0 then return {'noaccount'} end
    local zkey = K.sessions(id)
    -- Room for this one: the oldest beyond the cap go.
    local keep = tonumber(A[9]) - 1
    if keep < 0 then keep = 0 end
    local extra = redis.call('ZCARD', zkey) - keep
    if extra > 0 then
      for _, old in ipairs(redis.call('ZRANGE', zkey, 0, int(extra - 1))) do
        redis.call('DEL', K.session(old))
        redis.call('ZREM', K.session_expiry, old .. id)
      end
      redis.call('ZREMRANGEBYRANK', zkey, 0, int(extra - 1))
    end
    redis.call('HSET', key, 'account', id, 'created', now, 'expires', expires)
    redis.call('ZADD', zkey, now, hex)
    member = hex .. id
  else
    redis.call('HSET', key, 'guest_id', id, 'guest_name', name, 'created', now,
      'expires', expires)
  end
  set_ttl(key, expires, now)
  -- The sweep's index names the account too (after the 64 hex characters), so it can
  -- clean the account's list even when the TTL took the session first.
  redis.call('ZADD', K.session_expiry, expires, member)
  return {'ok'}
end

-- hex, now -> {} | {'a', id, name, admin, created} | {'g', id, name}
function ops.session()
  local f = redis.call('HMGET', K.session(A[3]), 'account', 'guest_id', 'guest_name', 'expires')
  if not f[4] or not lt(A[4], f[4]) then return {} end
  if f[1] then
    local a = redis.call('HMGET', K.account(f[1]), 'name', 'admin', 'created')
    if not a[1] then return {} end
    return {'a', f[1], a[1], a[2], a[3]}
  end
  if f[2] and f[3] then return {'g', f[2], f[3]} end
  return {}
end

-- hex
function ops.delete_session()
  local hex = A[3]
  local key = K.session(hex)
  local account = redis.call('HGET', key, 'account')
  redis.call('DEL', key)
  if account then
    redis.call('ZREM', K.sessions(account), hex)
    redis.call('ZREM', K.session_expiry, hex .. account)
  else
    redis.call('ZREM', K.session_expiry, hex)
  end
  return 1
end

-- account -> count (expired ones count until swept, as in SQLite)
function ops.session_count()
  return redis.call('ZCARD', K.sessions(A[3]))
end

-- Invites -------------------------------------------------------------------------------

-- hex, admin, bootstrap, expires, now
function ops.create_invite()
  local hex, admin, bootstrap, expires, now = A[3], A[4], A[5], A[6], A[7]
  local key = K.invite(hex)
  if redis.call('EXISTS', key) == 1 then return {'exists'} end
  if bootstrap == '1' then
    -- The previous unused bootstrap invite is replaced (used ones left the set).
    for _, old in ipairs(redis.call('SMEMBERS', K.bootstrap)) do
      redis.call('DEL', K.invite(old))
      redis.call('ZREM', K.invite_expiry, old)
    end
    redis.call('DEL', K.bootstrap)
  end
  redis.call('HSET', key, 'admin', admin, 'bootstrap', bootstrap, 'created', now,
    'expires', expires)
  set_ttl(key, expires, now)
  redis.call('ZADD', K.invite_expiry, expires, hex)
  if bootstrap == '1' then redis.call('SADD', K.bootstrap, hex) end
  return {'ok'}
end

-- hex, now -> 1 | 0
function ops.invite_valid()
  local f = redis.call('HMGET', K.invite(A[3]), 'used_by', 'expires')
  if f[2] and not f[1] and lt(A[4], f[2]) then return 1 end
  return 0
end

-- now, batch -> {sessions deleted, invites deleted}: the caller calls again while either
-- count is the batch, so no run holds Redis long.
function ops.sweep()
  local now, batch = A[3], A[4]
  local expired = redis.call('ZRANGEBYSCORE', K.session_expiry, '-inf', now, 'LIMIT', 0, batch)
  for _, member in ipairs(expired) do
    local hex = member:sub(1, 64)
    redis.call('DEL', K.session(hex))
    if #member > 64 then redis.call('ZREM', K.sessions(member:sub(65)), hex) end
    redis.call('ZREM', K.session_expiry, member)
  end
  local invites = redis.call('ZRANGEBYSCORE', K.invite_expiry, '-inf', now, 'LIMIT', 0, batch)
  for _, hex in ipairs(invites) do
    local key = K.invite(hex)
    if not redis.call('HGET', key, 'used_by') then
      redis.call('DEL', key)
      redis.call('SREM', K.bootstrap, hex)
    end
    redis.call('ZREM', K.invite_expiry, hex)
  end
  return {#expired, #invites}
end

-- Rooms and read positions --------------------------------------------------------------

-- name, topic, creator, now, max total, max per user
function ops.create_room()
  local name, topic, creator, now = A[3], A[4], A[5], A[6]
  local key = K.room(name)
  if redis.call('EXISTS', key) == 1 then return {'taken'} end
  local total = redis.call('ZCARD', K.rooms)
  if total >= tonumber(A[7]) then return {'total', total} end
  if creator ~= '' then
    local mine = tonumber(redis.call('HGET', K.room_counts, creator) or '0')
    if mine >= tonumber(A[8]) then return {'mine', mine} end
    redis.call('HINCRBY', K.room_counts, creator, 1)
  end
  redis.call('HSET', key, 'topic', topic, 'creator', creator, 'created', now)
  redis.call('ZADD', K.rooms, 0, name)
  return {'ok'}
end

-- -> {name, topic, creator, ...} by name (bounded by the rooms limit)
function ops.rooms()
  local out = {}
  for _, name in ipairs(redis.call('ZRANGE', K.rooms, 0, -1)) do
    local f = redis.call('HMGET', K.room(name), 'topic', 'creator')
    if f[1] then
      out[#out + 1] = name
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
    end
  end
  return out
end

-- room, topic -> 1 | 0
function ops.set_topic()
  local key = K.room(A[3])
  if redis.call('EXISTS', key) == 0 then return 0 end
  redis.call('HSET', key, 'topic', A[4])
  return 1
end

-- user, room, offset: forward only
function ops.set_read()
  local key = K.reads(A[3])
  local current = redis.call('HGET', key, A[4])
  if not current or lt(current, A[5]) then redis.call('HSET', key, A[4], A[5]) end
  return 1
end

-- user -> {room, offset, ...}
function ops.reads()
  return redis.call('HGETALL', K.reads(A[3]))
end

-- user, room
function ops.forget_read()
  redis.call('HDEL', K.reads(A[3]), A[4])
  return 1
end

-- Direct messages -----------------------------------------------------------------------

local DM_FIELDS = {'sender', 'sender_name', 'recipient', 'recipient_name', 'text', 'time',
  'delivered', 'late'}

-- Appends message `id` as 9 items (id first) to `out`; false when it is gone.
local function push_dm(out, id)
  local f = redis.call('HMGET', K.dm(id), unpack(DM_FIELDS))
  if not f[1] then return false end
  out[#out + 1] = id
  for i = 1, #DM_FIELDS do out[#out + 1] = f[i] end
  return true
end

-- Puts a conversation at its newest message in both users' lists, or takes it out of
-- them when it has none left.
local function refresh_conversation(lo, hi)
  local top = redis.call('ZREVRANGE', K.conv(lo, hi), 0, 0)
  if #top == 0 then
    redis.call('ZREM', K.convs(lo), hi)
    redis.call('ZREM', K.convs(hi), lo)
  else
    redis.call('ZADD', K.convs(lo), top[1], hi)
    redis.call('ZADD', K.convs(hi), top[1], lo)
  end
end

-- lo, hi (the pair, ordered by the caller), from, from_name, to, to_name, text, now, keep
-- -> id
function ops.add_dm()
  local lo, hi = A[3], A[4]
  local id = int(redis.call('INCR', K.dm_seq))
  redis.call('HSET', K.dm(id), 'lo', lo, 'hi', hi, 'sender', A[5], 'sender_name', A[6],
    'recipient', A[7], 'recipient_name', A[8], 'text', A[9], 'time', A[10],
    'delivered', '0', 'late', '0')
  local conv = K.conv(lo, hi)
  redis.call('ZADD', conv, id, id)
  -- The conversation keeps its newest `keep`.
  local extra = redis.call('ZCARD', conv) - tonumber(A[11])
  if extra > 0 then
    for _, old in ipairs(redis.call('ZRANGE', conv, 0, int(extra - 1))) do
      redis.call('DEL', K.dm(old))
    end
    redis.call('ZREMRANGEBYRANK', conv, 0, int(extra - 1))
  end
  redis.call('ZADD', K.convs(lo), id, hi)
  redis.call('ZADD', K.convs(hi), id, lo)
  return id
end

-- id
function ops.dm_delivered_now()
  local key = K.dm(A[3])
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'delivered', '1') end
  return 1
end

-- id
function ops.delete_dm()
  local key = K.dm(A[3])
  local f = redis.call('HMGET', key, 'lo', 'hi')
  if not f[1] then return 0 end
  redis.call('DEL', key)
  redis.call('ZREM', K.conv(f[1], f[2]), A[3])
  refresh_conversation(f[1], f[2])
  return 1
end

-- recipient, id... -> {id, sender, ...} of those that changed
function ops.dm_mark_delivered()
  local out = {}
  for i = 4, #A do
    local key = K.dm(A[i])
    local f = redis.call('HMGET', key, 'recipient', 'delivered', 'sender')
    if f[1] == A[3] and f[2] == '0' then
      redis.call('HSET', key, 'delivered', '1', 'late', '1')
      out[#out + 1] = A[i]
      out[#out + 1] = f[3]
    end
  end
  return out
end

-- lo, hi, before ('+inf' or '(ID'), limit -> messages, newest first, 9 items each
function ops.dm_history()
  local out = {}
  local ids = redis.call('ZREVRANGEBYSCORE', K.conv(A[3], A[4]), A[5], '-inf', 'LIMIT', 0, A[6])
  for _, id in ipairs(ids) do push_dm(out, id) end
  return out
end

-- user, limit -> {peer, unread, message (9 items), ...}, most recent first
function ops.conversations()
  local user = A[3]
  local out = {}
  local heads = redis.call('ZREVRANGEBYSCORE', K.convs(user), '+inf', '-inf', 'WITHSCORES',
    'LIMIT', 0, A[4])
  for i = 1, #heads, 2 do
    local peer, last = heads[i], heads[i + 1]
    local f = redis.call('HMGET', K.dm(last), 'lo', 'hi')
    if f[1] then
      local read = redis.call('HGET', K.dm_reads(user), peer) or '0'
      -- Messages from the peer after the read position: a conversation holds at most
      -- `keep`, so this is bounded.
      local unread = 0
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.conv(f[1], f[2]), '(' .. read, '+inf')) do
        if redis.call('HGET', K.dm(id), 'sender') == peer then unread = unread + 1 end
      end
      out[#out + 1] = peer
      out[#out + 1] = unread
      push_dm(out, last)
    end
  end
  return out
end

-- user, peer, id: forward only
function ops.set_dm_read()
  local key = K.dm_reads(A[3])
  local current = redis.call('HGET', key, A[4])
  if not current or lt(current, A[5]) then redis.call('HSET', key, A[4], A[5]) end
  return 1
end

-- Polls ---------------------------------------------------------------------------------

-- The choices of a stored vote (`time|choices|name`).
local function vote_choices(stored)
  return stored:match('^[^|]*|([^|]*)|') or ''
end

-- {poll fields (HGETALL), voted '1' | '0', choices}, or nil when there is no such poll.
local function view(id, voter)
  local f = redis.call('HGETALL', K.poll(id))
  if #f == 0 then return nil end
  local mine = redis.call('HGET', K.votes(id), voter)
  if mine then return {f, '1', vote_choices(mine)} end
  return {f, '0', ''}
end

-- Whether a poll (HMGET closed, closes_at) is closed at `now`.
local function is_closed(closed, closes_at, now)
  return closed == '1' or (closes_at ~= '' and not lt(now, closes_at))
end

-- id, owner, owner_name, question, max_choices, results, changeable, closes_at ('' none),
-- anonymous, now, max per owner, option texts...
function ops.create_poll()
  local id, owner, closes_at, now = A[3], A[4], A[10], A[12]
  local mine = redis.call('ZCARD', K.polls_of(owner))
  if mine >= tonumber(A[13]) then return {'limit', mine} end
  local key = K.poll(id)
  if redis.call('EXISTS', key) == 1 then return {'exists'} end
  redis.call('HSET', key, 'id', id, 'owner', owner, 'owner_name', A[5], 'question', A[6],
    'max_choices', A[7], 'results', A[8], 'changeable', A[9], 'closes_at', closes_at,
    'anonymous', A[11], 'closed', '0', 'created', now, 'voters', '0', 'total', '0',
    'seq', '0', 'n', #A - 13)
  for i = 14, #A do
    redis.call('HSET', key, 'o:' .. (i - 14), A[i], 'c:' .. (i - 14), '0')
  end
  redis.call('ZADD', K.polls_of(owner), now, id)
  redis.call('ZADD', K.open, now, id)
  if closes_at ~= '' then redis.call('ZADD', K.due, closes_at, id) end
  return {'ok'}
end

-- id, voter -> {} | view
function ops.poll()
  return view(A[3], A[4]) or {}
end

-- id, voter, voter name, now, choices ('0,2') -> {'ok', changed, view} | {'nopoll'} |
-- {'closed'} | {'choices', n, max_choices} | {'voted'}
function ops.cast()
  local id, voter, name, now = A[3], A[4], A[5], A[6]
  local key = K.poll(id)
  local f = redis.call('HMGET', key, 'n', 'max_choices', 'closed', 'closes_at', 'changeable')
  if not f[1] then return {'nopoll'} end
  if is_closed(f[3], f[4], now) then return {'closed'} end
  local n, max = tonumber(f[1]), tonumber(f[2])
  local list, seen = {}, {}
  for c in string.gmatch(A[7], '[^,]+') do
    local x = tonumber(c)
    if not x or x < 0 or x >= n or x ~= math.floor(x) or seen[x] then
      return {'choices', f[1], f[2]}
    end
    seen[x] = true
    list[#list + 1] = x
  end
  if #list == 0 or #list > max then return {'choices', f[1], f[2]} end
  table.sort(list)
  local vkey = K.votes(id)
  local old = redis.call('HGET', vkey, voter)
  local old_count = 0
  if old then
    if f[5] ~= '1' then return {'voted'} end
    for c in string.gmatch(vote_choices(old), '[^,]+') do
      redis.call('HINCRBY', key, 'c:' .. c, -1)
      old_count = old_count + 1
    end
  else
    redis.call('HINCRBY', key, 'voters', 1)
  end
  for _, c in ipairs(list) do redis.call('HINCRBY', key, 'c:' .. c, 1) end
  redis.call('HINCRBY', key, 'total', #list - old_count)
  redis.call('HINCRBY', key, 'seq', 1)
  redis.call('HSET', vkey, voter, now .. '|' .. table.concat(list, ',') .. '|' .. name)
  return {'ok', old and '1' or '0', view(id, voter)}
end

-- id, closed ('1' | '0') -> {'ok', view} | {'nopoll'}
function ops.set_closed()
  local id = A[3]
  local key = K.poll(id)
  local created = redis.call('HGET', key, 'created')
  if not created then return {'nopoll'} end
  if A[4] == '1' then
    redis.call('HSET', key, 'closed', '1')
    redis.call('ZREM', K.open, id)
  else
    -- Reopening clears a closing time.
    redis.call('HSET', key, 'closed', '0', 'closes_at', '')
    redis.call('ZADD', K.open, created, id)
  end
  redis.call('ZREM', K.due, id)
  redis.call('HINCRBY', key, 'seq', 1)
  return {'ok', view(id, '')}
end

-- id -> 1 | 0
function ops.delete_poll()
  local id = A[3]
  local key = K.poll(id)
  local owner = redis.call('HGET', key, 'owner')
  if not owner then return 0 end
  redis.call('DEL', key)
  -- A large poll's votes are freed off the main thread.
  redis.call('UNLINK', K.votes(id))
  redis.call('ZREM', K.polls_of(owner), id)
  redis.call('ZREM', K.open, id)
  redis.call('ZREM', K.due, id)
  return 1
end

-- now, batch -> {view, ...} of the polls it closed
function ops.close_due()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.due, '-inf', A[3], 'LIMIT', 0, A[4])) do
    local key = K.poll(id)
    if redis.call('HGET', key, 'closed') == '0' then
      redis.call('HSET', key, 'closed', '1')
      redis.call('HINCRBY', key, 'seq', 1)
      redis.call('ZREM', K.open, id)
      out[#out + 1] = view(id, '')
    end
    redis.call('ZREM', K.due, id)
  end
  return out
end

-- The newest ids of sorted set `key` that `keep` accepts: `limit` of them, and past
-- those the ones created in the same millisecond as the last (the caller sorts them by
-- id and keeps `limit`, as SQLite's ORDER BY created DESC, id would).
local function newest(key, limit, keep)
  local out = {}
  local boundary
  local offset = 0
  while true do
    local page = redis.call('ZREVRANGEBYSCORE', key, '+inf', '-inf', 'WITHSCORES', 'LIMIT',
      offset, 100)
    if #page == 0 then return out end
    for i = 1, #page, 2 do
      local id, score = page[i], page[i + 1]
      if boundary and score ~= boundary then return out end
      if keep(id) then
        out[#out + 1] = id
        if #out == limit then boundary = score end
      end
    end
    offset = offset + 100
  end
end

-- Appends a poll's summary line (9 items) for `voter` to `out`.
local function push_summary(out, id, voter)
  local f = redis.call('HMGET', K.poll(id), 'question', 'owner_name', 'closed', 'closes_at',
    'created', 'voters', 'total')
  if not f[1] then return end
  out[#out + 1] = id
  for i = 1, 7 do out[#out + 1] = f[i] end
  out[#out + 1] = redis.call('HEXISTS', K.votes(id), voter)
end

-- owner, limit (> 0) -> summaries (9 items each; `voted` is the owner's)
function ops.polls_of()
  local out = {}
  for _, id in ipairs(newest(K.polls_of(A[3]), tonumber(A[4]), function() return true end)) do
    push_summary(out, id, A[3])
  end
  return out
end

-- voter, limit (> 0), now -> summaries of open polls
function ops.open_polls()
  local now = A[5]
  local function open(id)
    local f = redis.call('HMGET', K.poll(id), 'closed', 'closes_at')
    return f[1] ~= false and not is_closed(f[1], f[2], now)
  end
  local out = {}
  for _, id in ipairs(newest(K.open, tonumber(A[4]), open)) do
    push_summary(out, id, A[3])
  end
  return out
end

-- id, cursor, count -> {next cursor, {voter, stored, ...}}
function ops.votes_page()
  return redis.call('HSCAN', K.votes(A[3]), A[4], 'COUNT', A[5])
end

-- id -> {'nopoll'} | {'ok', voters, total, count per option...}, from the votes alone
function ops.recount()
  local n = redis.call('HGET', K.poll(A[3]), 'n')
  if not n then return {'nopoll'} end
  local counts = {}
  for i = 1, tonumber(n) do counts[i] = 0 end
  local voters, total = 0, 0
  for _, stored in ipairs(redis.call('HVALS', K.votes(A[3]))) do
    voters = voters + 1
    for c in string.gmatch(vote_choices(stored), '[^,]+') do
      local i = tonumber(c) + 1
      if counts[i] then
        counts[i] = counts[i] + 1
        total = total + 1
      end
    end
  end
  local out = {'ok', voters, total}
  for i = 1, #counts do out[#out + 1] = counts[i] end
  return out
end

-- Users online ------------------------------------------------------------------------

-- node, ttl (ms), user... -> users online on the group's live nodes, each once
--
-- The node's set is replaced whole on every call (the node's upkeep calls it every few
-- seconds with its current list), so nothing stale survives a missed leave. A node that
-- stops calling is forgotten `ttl` after its last call: its set expires, and its entry is
-- dropped here. Times are Redis' own clock, not the callers': the nodes' clocks may
-- disagree, and one running ahead must not expire the others' sets.
function ops.online()
  local node, ttl = A[3], tonumber(A[4])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local key = K.online(node)
  redis.call('DEL', key)
  -- SADD in slices: unpack() of thousands of arguments would overflow Lua's C stack.
  for i = 5, #A, 1000 do
    redis.call('SADD', key, unpack(A, i, math.min(i + 999, #A)))
  end
  if #A >= 5 then redis.call('PEXPIRE', key, int(ttl)) end
  redis.call('ZADD', K.online_nodes, int(now + ttl), node)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', K.online_nodes, '-inf', int(now))) do
    redis.call('DEL', K.online(gone))
    redis.call('ZREM', K.online_nodes, gone)
  end
  local keys = {}
  for _, live in ipairs(redis.call('ZRANGE', K.online_nodes, 0, -1)) do
    keys[#keys + 1] = K.online(live)
  end
  if #keys == 1 then return redis.call('SCARD', keys[1]) end
  -- A user with connections on several nodes is one person online.
  return #redis.call('SUNION', unpack(keys))
end

local op = ops[ARGV[2]]
if not op then return redis.error_reply('apps store: unknown operation ' .. tostring(ARGV[2])) end
return op()
