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
-- 1 = rate limited, 2 = credits exhausted.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local has_credits = ARGV[1] == '1'
local refill_amount = tonumber(ARGV[2])
local refill_interval = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local first_cost = 5 + count * 4

local function floor0(x)
  if x < 0 then return 0 end
  return math.floor(x)
end

local function ceil1(x)
  if x < 1 then return 1 end
  return math.ceil(x)
end

-- Integers go to Redis as digits, never as Lua's "1e+15".
local function int(x)
  return string.format('%d', x)
end

-- Each algorithm has `load` (read its state once per call), `judge` (one check against the
-- state in memory) and `save` (write the state back when a check changed it). `judge`
-- returns {ok, remaining if applied, reset_ms, retry_ms, apply, remaining as it is}; a
-- refused limit has no apply and the same two remainings.

local fixed_window = {
  load = function(key)
    local state = redis.call('HMGET', key, 'w', 'c')
    return {w = tonumber(state[1]), c = tonumber(state[2]) or 0}
  end,
  judge = function(st, _, limit, window, _, cost)
    local start = now - (now % window)
    local used = 0
    if st.w == start then used = st.c end
    local reset = start + window - now
    if used + cost <= limit then
      return {true, limit - used - cost, reset, 0, function()
        st.w, st.c, st.dirty = start, used + cost, true
      end, limit - used}
    end
    return {false, floor0(limit - used), reset, reset, nil, floor0(limit - used)}
  end,
  save = function(st, key, window)
    redis.call('HSET', key, 'w', int(st.w), 'c', int(st.c))
    redis.call('PEXPIREAT', key, int(st.w + window))
  end,
}

local sliding_window = {
  load = function(key)
    local state = redis.call('HMGET', key, 'w', 'c', 'p')
    return {w = tonumber(state[1]), c = tonumber(state[2]) or 0, p = tonumber(state[3]) or 0}
  end,
  judge = function(st, _, limit, window, _, cost)
    local start = now - (now % window)
    local current, previous = 0, 0
    if st.w == start then
      current, previous = st.c, st.p
    elseif st.w == start - window then
      previous = st.c
    end
    local elapsed = now - start
    local estimate = previous * (window - elapsed) / window + current
    local reset = start + window - now
    if estimate + cost <= limit then
      return {true, floor0(limit - estimate - cost), reset, 0, function()
        st.w, st.c, st.p, st.dirty = start, current + cost, previous, true
      end, floor0(limit - estimate)}
    end
    local retry = reset
    if current + cost <= limit and previous > 0 then
      -- The previous window's weight falls linearly: wait until it has fallen enough.
      retry = ceil1(window * (1 - (limit - current - cost) / previous) - elapsed)
      -- At the next window start the estimate drops to `current`, which then fits.
      if retry > reset then retry = reset end
    end
    return {false, floor0(limit - estimate), reset, retry, nil, floor0(limit - estimate)}
  end,
  save = function(st, key, window)
    redis.call('HSET', key, 'w', int(st.w), 'c', int(st.c), 'p', int(st.p))
    redis.call('PEXPIREAT', key, int(st.w + 2 * window))
  end,
}

-- GCRA: one unit every `interval` ms, up to `burst` at once. The theoretical arrival time
-- is kept to the microsecond, in memory as in Redis, so a batch and single calls agree.
local token_bucket = {
  load = function(key)
    return {tat = tonumber(redis.call('GET', key))}
  end,
  judge = function(st, _, limit, window, burst, cost)
    local interval = window / limit
    local tat = st.tat or now
    if tat < now then tat = now end
    local new_tat = tat + cost * interval
    local allow_at = new_tat - burst * interval
    if allow_at <= now then
      return {true, floor0((now + burst * interval - new_tat) / interval), math.ceil(new_tat - now), 0, function()
        st.tat, st.dirty = tonumber(string.format('%.3f', new_tat)), true
      end, floor0((now + burst * interval - tat) / interval)}
    end
    local left = floor0((now + burst * interval - tat) / interval)
    return {false, left, math.ceil(tat - now), ceil1(allow_at - now), nil, left}
  end,
  save = function(st, key)
    redis.call('SET', key, string.format('%.3f', st.tat), 'PXAT', int(math.ceil(st.tat)))
  end,
}

-- Its entries live in Redis, one per unit: read and written as each check goes.
local sliding_log = {
  load = function() return {} end,
  judge = function(_, key, limit, window, _, cost)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local used = redis.call('ZCARD', key)
    local reset = window
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if oldest[2] then reset = tonumber(oldest[2]) + window - now end
    if used + cost <= limit then
      return {true, limit - used - cost, reset, 0, function()
        for j = 1, cost do
          redis.call('ZADD', key, now, t[1] .. '.' .. t[2] .. ':' .. (used + j))
        end
        redis.call('PEXPIRE', key, window)
      end, limit - used}
    end
    local retry = window
    if cost <= limit then
      -- Wait until enough of the oldest entries leave the window.
      local index = used + cost - limit - 1
      local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
      if entry[2] then retry = ceil1(tonumber(entry[2]) + window - now) end
    end
    return {false, floor0(limit - used), reset, retry, nil, floor0(limit - used)}
  end,
  save = function() end,
}

local algorithms = {
  fixed_window = fixed_window,
  sliding_window = sliding_window,
  token_bucket = token_bucket,
  sliding_log = sliding_log,
}

local limits = {}
for i = 1, count do
  local at = 4 + (i - 1) * 4
  local algorithm = algorithms[ARGV[at + 1]]
  if not algorithm then return redis.error_reply('unknown algorithm ' .. tostring(ARGV[at + 1])) end
  limits[i] = {
    algorithm = algorithm,
    key = KEYS[i + 1],
    limit = tonumber(ARGV[at + 2]),
    window = tonumber(ARGV[at + 3]),
    burst = tonumber(ARGV[at + 4]),
  }
  limits[i].state = algorithm.load(limits[i].key)
end

local credits = nil
if has_credits then
  local state = redis.call('HMGET', KEYS[1], 'remaining', 'refilled_at')
  credits = {remaining = tonumber(state[1]) or 0, refilled_at = tonumber(state[2]), spent = 0}
end

local function judge(cost)
  local code = 0
  local retry = 0
  local judged = {}
  for i = 1, count do
    local l = limits[i]
    local result = l.algorithm.judge(l.state, l.key, l.limit, l.window, l.burst, cost)
    judged[i] = result
    if not result[1] then
      code = 1
      if result[4] > retry then retry = result[4] end
    end
  end

  local credits_left = -1
  if credits then
    if refill_interval > 0 then
      if credits.refilled_at == nil then
        credits.refilled_at = now
      elseif now - credits.refilled_at >= refill_interval then
        -- A refill sets the balance back to `amount`; it does not add up.
        credits.remaining = refill_amount
        credits.refilled_at = credits.refilled_at
          + math.floor((now - credits.refilled_at) / refill_interval) * refill_interval
      end
    end
    credits_left = credits.remaining
    if code == 0 and credits.remaining < cost then
      code = 2
      if refill_interval > 0 then retry = ceil1(credits.refilled_at + refill_interval - now) end
    end
  end

  if code == 0 then
    for i = 1, count do judged[i][5]() end
    if credits then
      credits_left = credits_left - cost
      credits.remaining = credits_left
      credits.spent = credits.spent + cost
    end
  end

  local reply = {code, retry, now, credits_left}
  for i = 1, count do
    -- Remaining after this check when it passed; as it stands when it was refused.
    if code == 0 then reply[#reply + 1] = judged[i][2] else reply[#reply + 1] = judged[i][6] end
    reply[#reply + 1] = judged[i][3]
  end
  return reply
end

local replies = {}
for c = first_cost, #ARGV do
  for _, value in ipairs(judge(tonumber(ARGV[c]))) do replies[#replies + 1] = value end
end

for i = 1, count do
  local l = limits[i]
  if l.state.dirty then l.algorithm.save(l.state, l.key, l.window) end
end
if credits then
  -- A refill that became due is kept even when every check was refused: it spends nothing.
  if credits.refilled_at ~= nil then
    redis.call('HSET', KEYS[1], 'remaining', int(credits.remaining), 'refilled_at', int(credits.refilled_at))
  elseif credits.spent > 0 then
    redis.call('HSET', KEYS[1], 'remaining', int(credits.remaining))
  end
  -- What was spent, per minute (`s:<minutes since the epoch>`), for the reconciliation of
  -- credits against the usage counted in Postgres; key-admin prunes old minutes.
  if credits.spent > 0 then
    redis.call('HINCRBY', KEYS[1], 's:' .. math.floor(now / 60000), int(credits.spent))
  end
end

return replies
