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
-- wrote, exactly as if each had been its own call at the same instant.
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

-- Each checker judges one limit and returns {ok, remaining if applied, reset_ms, retry_ms,
-- apply, remaining as it is}; a refused limit has no apply and the same two remainings.

local function fixed_window(key, limit, window, _, cost)
  local start = now - (now % window)
  local state = redis.call('HMGET', key, 'w', 'c')
  local used = 0
  if tonumber(state[1]) == start then used = tonumber(state[2]) or 0 end
  local reset = start + window - now
  if used + cost <= limit then
    return {true, limit - used - cost, reset, 0, function()
      redis.call('HSET', key, 'w', start, 'c', used + cost)
      redis.call('PEXPIREAT', key, start + window)
    end, limit - used}
  end
  return {false, floor0(limit - used), reset, reset, nil, floor0(limit - used)}
end

local function sliding_window(key, limit, window, _, cost)
  local start = now - (now % window)
  local state = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(state[1])
  local current, previous = 0, 0
  if w == start then
    current = tonumber(state[2]) or 0
    previous = tonumber(state[3]) or 0
  elseif w == start - window then
    previous = tonumber(state[2]) or 0
  end
  local elapsed = now - start
  local estimate = previous * (window - elapsed) / window + current
  local reset = start + window - now
  if estimate + cost <= limit then
    return {true, floor0(limit - estimate - cost), reset, 0, function()
      redis.call('HSET', key, 'w', start, 'c', current + cost, 'p', previous)
      redis.call('PEXPIREAT', key, start + 2 * window)
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
end

local function token_bucket(key, limit, window, burst, cost)
  -- GCRA: one unit every `interval` ms, up to `burst` at once.
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst * interval
  if allow_at <= now then
    return {true, floor0((now + burst * interval - new_tat) / interval), math.ceil(new_tat - now), 0, function()
      redis.call('SET', key, string.format('%.3f', new_tat), 'PXAT', math.ceil(new_tat))
    end, floor0((now + burst * interval - tat) / interval)}
  end
  local left = floor0((now + burst * interval - tat) / interval)
  return {false, left, math.ceil(tat - now), ceil1(allow_at - now), nil, left}
end

local function sliding_log(key, limit, window, _, cost)
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
end

local checkers = {
  fixed_window = fixed_window,
  sliding_window = sliding_window,
  token_bucket = token_bucket,
  sliding_log = sliding_log,
}

local function judge(cost)
  local code = 0
  local retry = 0
  local judged = {}
  for i = 1, count do
    local at = 4 + (i - 1) * 4
    local check = checkers[ARGV[at + 1]]
    if not check then return redis.error_reply('unknown algorithm ' .. tostring(ARGV[at + 1])) end
    local result = check(KEYS[i + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4]), cost)
    judged[i] = result
    if not result[1] then
      code = 1
      if result[4] > retry then retry = result[4] end
    end
  end

  local credits_left = -1
  if has_credits then
    local state = redis.call('HMGET', KEYS[1], 'remaining', 'refilled_at')
    local remaining = tonumber(state[1]) or 0
    local refilled_at = tonumber(state[2])
    if refill_interval > 0 then
      if refilled_at == nil then
        refilled_at = now
      elseif now - refilled_at >= refill_interval then
        -- A refill sets the balance back to `amount`; it does not add up.
        remaining = refill_amount
        refilled_at = refilled_at + math.floor((now - refilled_at) / refill_interval) * refill_interval
      end
    end
    credits_left = remaining
    if code == 0 and remaining < cost then
      code = 2
      if refill_interval > 0 then retry = ceil1(refilled_at + refill_interval - now) end
    end
    -- A refill that became due is kept even when the check is refused: it spends nothing.
    if refilled_at ~= nil then
      redis.call('HSET', KEYS[1], 'remaining', remaining, 'refilled_at', refilled_at)
    end
  end

  if code == 0 then
    for i = 1, count do judged[i][5]() end
    if has_credits then
      credits_left = credits_left - cost
      redis.call('HINCRBY', KEYS[1], 'remaining', -cost)
      -- What was spent, per minute (`s:<minutes since the epoch>`), for the reconciliation
      -- of credits against the usage counted in Postgres; key-admin prunes old minutes.
      if cost > 0 then
        redis.call('HINCRBY', KEYS[1], 's:' .. math.floor(now / 60000), cost)
      end
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
  local reply = judge(tonumber(ARGV[c]))
  if reply.err then return reply end
  for _, value in ipairs(reply) do replies[#replies + 1] = value end
end
return replies
