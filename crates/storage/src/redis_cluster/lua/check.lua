-- keymeter check: every limit and the credits of one API key, all or nothing, for one or
-- more checks of that key in a row.
--
-- KEYS[1]      the key's credits hash (fields `remaining`, `refilled_at`, `s:<minute>`)
-- KEYS[1 + i]  the state of limit i
-- ARGV         has_credits (0|1), refill_amount, refill_interval_ms, limit count,
--              then per limit: algorithm, limit, window_ms, burst,
--              then the cost of each check, in the order they are to be judged
--
-- Every KEY carries the same hash tag, so the script runs on one node, atomically. Time is
-- the node's (TIME), never the caller's. A check runs in two phases: first every limit and
-- the credits are read and judged; only if all pass is anything written, so a refused check
-- consumes nothing.
--
-- Checks that arrive together run one after the other, each seeing what the ones before it
-- spent, exactly as if each had been its own call at the same instant. The state of the
-- windows, buckets and credits is read once per call and written back once at the end
-- (a sliding log's entries are written as they are added).
--
-- Returns, per check, {code, retry_after_ms, now_ms, credits_remaining (-1: no credits),
-- then per limit remaining and reset_ms}, all in one flat list. code 0 = allowed,
-- 1 = rate limited, 2 = credits exhausted. Just {-1} when the key has credits and Redis
-- has no balance for it (nothing judged, nothing written).
--
-- This runs on the Redis node's one thread for every check, so it is written to allocate
-- little: each algorithm's load, judge and save work on plain values. The common call (one
-- limit, no credits, one check) uses them directly; any other keeps the state of each
-- limit in flat arrays filled once per call. The direct path saves a fifth of the time per
-- call (Redis masters under load from 200 keys: 31-38 µs against 38-47 µs).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local floor, ceil = math.floor, math.ceil

local function floor0(x)
  if x < 0 then return 0 end
  return floor(x)
end

local function ceil1(x)
  if x < 1 then return 1 end
  return ceil(x)
end

-- Integers go to Redis as digits, never as Lua's "1e+15".
local function int(x)
  return string.format('%d', x)
end

-- The state of a limit is w, c, p: a window's start, its count and the previous window's
-- count; for a token bucket, w alone, the theoretical arrival time, kept to the
-- microsecond so a batch and single calls agree. A sliding log's entries live in Redis,
-- one per unit, read and written as each check goes.
local function load(a, k)
  if a == 'token_bucket' then
    return tonumber(redis.call('GET', k))
  elseif a == 'fixed_window' then
    local state = redis.call('HMGET', k, 'w', 'c')
    return tonumber(state[1]), tonumber(state[2]) or 0
  elseif a == 'sliding_window' then
    local state = redis.call('HMGET', k, 'w', 'c', 'p')
    return tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
  end
end

-- One check of `cost` against a limit whose state is w, c, p. Returns whether it fits, the
-- remaining if it is applied, reset_ms, retry_ms, the remaining as it stands (a refused
-- check has no "if applied": both remainings are the same) and, when it fits, the state
-- it leaves (for a sliding log, the entries it found).
local function judge(a, k, lim, win, burst, w, c, p, cost)
  if a == 'token_bucket' then
    -- GCRA: one unit every `interval` ms, up to `burst` at once.
    local interval = win / lim
    local tat = w or now
    if tat < now then tat = now end
    local new_tat = tat + cost * interval
    local allow_at = new_tat - burst * interval
    local left = floor0((now + burst * interval - tat) / interval)
    if allow_at <= now then
      return true, floor0((now + burst * interval - new_tat) / interval), ceil(new_tat - now), 0,
        left, floor(new_tat * 1000 + 0.5) / 1000
    end
    return false, left, ceil(tat - now), ceil1(allow_at - now), left
  elseif a == 'fixed_window' then
    local start = now - (now % win)
    local used = 0
    if w == start then used = c end
    local reset = start + win - now
    if used + cost <= lim then
      return true, lim - used - cost, reset, 0, lim - used, start, used + cost
    end
    local left = floor0(lim - used)
    return false, left, reset, reset, left
  elseif a == 'sliding_window' then
    local start = now - (now % win)
    local current, previous = 0, 0
    if w == start then
      current, previous = c, p
    elseif w == start - win then
      previous = c
    end
    local elapsed = now - start
    local estimate = previous * (win - elapsed) / win + current
    local reset = start + win - now
    local left = floor0(lim - estimate)
    if estimate + cost <= lim then
      return true, floor0(lim - estimate - cost), reset, 0, left, start, current + cost, previous
    end
    local retry = reset
    if current + cost <= lim and previous > 0 then
      -- The previous window's weight falls linearly: wait until it has fallen enough.
      retry = ceil1(win * (1 - (lim - current - cost) / previous) - elapsed)
      -- At the next window start the estimate drops to `current`, which then fits.
      if retry > reset then retry = reset end
    end
    return false, left, reset, retry, left
  else -- sliding_log
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now - win)
    local used = redis.call('ZCARD', k)
    local reset = win
    local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if oldest[2] then reset = tonumber(oldest[2]) + win - now end
    if used + cost <= lim then
      return true, lim - used - cost, reset, 0, lim - used, nil, used
    end
    local retry = win
    if cost <= lim then
      -- Wait until enough of the oldest entries leave the window.
      local index = used + cost - lim - 1
      local entry = redis.call('ZRANGE', k, index, index, 'WITHSCORES')
      if entry[2] then retry = ceil1(tonumber(entry[2]) + win - now) end
    end
    local left = floor0(lim - used)
    return false, left, reset, retry, left
  end
end

-- A check that fit a sliding log whose window held `used` entries adds its own.
local function add_entries(k, win, used, cost)
  for j = 1, cost do
    redis.call('ZADD', k, now, t[1] .. '.' .. t[2] .. ':' .. (used + j))
  end
  redis.call('PEXPIRE', k, win)
end

-- Writes a changed state back (not for a sliding log: its entries are written as added).
local function save(a, k, win, w, c, p)
  if a == 'token_bucket' then
    redis.call('SET', k, string.format('%.3f', w), 'PXAT', int(ceil(w)))
  elseif a == 'fixed_window' then
    redis.call('HSET', k, 'w', int(w), 'c', int(c))
    redis.call('PEXPIREAT', k, int(w + win))
  else -- sliding_window
    redis.call('HSET', k, 'w', int(w), 'c', int(c), 'p', int(p))
    redis.call('PEXPIREAT', k, int(w + 2 * win))
  end
end

local known = {token_bucket = true, fixed_window = true, sliding_window = true, sliding_log = true}

local has_credits = ARGV[1] == '1'
local refill_amount = tonumber(ARGV[2])
local refill_interval = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local first_cost = 5 + count * 4

for i = 1, count do
  local a = ARGV[4 + (i - 1) * 4 + 1]
  if not known[a] then return redis.error_reply('unknown algorithm ' .. tostring(a)) end
end

-- The common call: one limit, no credits, one check.
if count == 1 and not has_credits and #ARGV == first_cost then
  local a, k = ARGV[5], KEYS[2]
  local lim, win = tonumber(ARGV[6]), tonumber(ARGV[7])
  local cost = tonumber(ARGV[9])
  local w, c, p = load(a, k)
  local fits, after, reset, retry, left, nw, nc, np = judge(a, k, lim, win, tonumber(ARGV[8]), w, c, p, cost)
  if not fits then return {1, retry, now, -1, left, reset} end
  if a == 'sliding_log' then add_entries(k, win, nc, cost) else save(a, k, win, nw, nc, np) end
  return {0, 0, now, -1, after, reset}
end

-- Per limit i: its algorithm and parameters, its state as it stands, the state a check that
-- fits would leave (nw, nc, np), and whether the state changed.
local alg, key, limit, window, burst = {}, {}, {}, {}, {}
local w, c, p, nw, nc, np, dirty = {}, {}, {}, {}, {}, {}, {}

for i = 1, count do
  local at = 4 + (i - 1) * 4
  alg[i], key[i] = ARGV[at + 1], KEYS[i + 1]
  limit[i], window[i], burst[i] = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  w[i], c[i], p[i] = load(alg[i], key[i])
end

-- A key with credits whose balance is not in Redis: key-admin writes a balance before the
-- record that says the key has one, so its shard lost its data (or the record is an old one
-- cached by the limiter). Nothing is judged or written; the caller answers by its failure
-- policy until key-admin has written the balance again.
local credits_remaining, credits_refilled_at, credits_spent = 0, nil, 0
if has_credits then
  local state = redis.call('HMGET', KEYS[1], 'remaining', 'refilled_at')
  if state[1] == false then
    return {-1}
  end
  credits_remaining, credits_refilled_at = tonumber(state[1]) or 0, tonumber(state[2])
end

local replies, n = {}, 0
local after, reset, left = {}, {}, {}
for ci = first_cost, #ARGV do
  local cost = tonumber(ARGV[ci])
  local code, retry = 0, 0
  for i = 1, count do
    local fits, wait
    fits, after[i], reset[i], wait, left[i], nw[i], nc[i], np[i] =
      judge(alg[i], key[i], limit[i], window[i], burst[i], w[i], c[i], p[i], cost)
    if not fits then
      code = 1
      if wait > retry then retry = wait end
    end
  end

  local credits_left = -1
  if has_credits then
    if refill_interval > 0 then
      if credits_refilled_at == nil then
        credits_refilled_at = now
      elseif now - credits_refilled_at >= refill_interval then
        -- A refill sets the balance back to `amount`; it does not add up.
        credits_remaining = refill_amount
        credits_refilled_at = credits_refilled_at
          + floor((now - credits_refilled_at) / refill_interval) * refill_interval
      end
    end
    credits_left = credits_remaining
    if code == 0 and credits_remaining < cost then
      code = 2
      if refill_interval > 0 then
        retry = ceil1(credits_refilled_at + refill_interval - now)
      end
    end
  end

  if code == 0 then
    for i = 1, count do
      if alg[i] == 'sliding_log' then
        add_entries(key[i], window[i], nc[i], cost)
      else
        w[i], c[i], p[i], dirty[i] = nw[i], nc[i], np[i], true
      end
    end
    if has_credits then
      credits_left = credits_left - cost
      credits_remaining = credits_left
      credits_spent = credits_spent + cost
    end
  end

  replies[n + 1], replies[n + 2], replies[n + 3], replies[n + 4] = code, retry, now, credits_left
  n = n + 4
  -- Remaining after this check when it passed; as it stands when it was refused.
  local remaining = left
  if code == 0 then remaining = after end
  for i = 1, count do
    replies[n + 1], replies[n + 2] = remaining[i], reset[i]
    n = n + 2
  end
end

for i = 1, count do
  if dirty[i] then save(alg[i], key[i], window[i], w[i], c[i], p[i]) end
end
if has_credits then
  -- A refill that became due is kept even when every check was refused: it spends nothing.
  if credits_refilled_at ~= nil then
    redis.call('HSET', KEYS[1], 'remaining', int(credits_remaining), 'refilled_at', int(credits_refilled_at))
  elseif credits_spent > 0 then
    redis.call('HSET', KEYS[1], 'remaining', int(credits_remaining))
  end
  -- What was spent, per minute (`s:<minutes since the epoch>`), for the reconciliation of
  -- credits against the usage counted in Postgres; key-admin prunes old minutes.
  if credits_spent > 0 then
    redis.call('HINCRBY', KEYS[1], 's:' .. floor(now / 60000), int(credits_spent))
  end
end

return replies
