-- Limits engine: every counter of one request in one atomic step (see routing/limit_counters.py).
--
-- KEYS[i]  counter key of limit i. In "admit" mode a DAY key is a base that gets ":YYYYMMDD"
--          (UTC day of the clock) appended, a MONTH key ":YYYYMM"; in "adjust" mode every key
--          is given in full.
-- ARGV[1]  "admit" | "adjust"
-- ARGV[2]  clock in unix microseconds, or "" to use Redis TIME (tests pass a controlled clock)
-- ARGV[3i .. 3i+2]  period_us (1e6 SECOND, 6e7 MINUTE, 0 DAY, -1 MONTH), threshold, cost (admit)
--          or delta: integers below 2^53 (Lua numbers are doubles; callers clamp)
--
-- SECOND/MINUTE limits are GCRA: the key holds the theoretical arrival time (TAT, microseconds
-- since EPOCH, a float). One unit costs period/threshold; a request fits while the new TAT is at
-- most one period ahead of now, so the burst capacity is the threshold and there is no window
-- edge. DAY and MONTH limits are plain counters on UTC calendar-day (month) keys that expire a day
-- after the day (month) ends. Counters are written as integer strings ('%.0f'), never as '%.14g'.
--
-- admit reply: {allowed, now_us, day, then per limit: fits (1 yes, 0 later, -1 never),
--               wait_us, remaining, reset_us}
-- Nothing is written unless every limit fits.

local EPOCH = 1767225600000000 -- 2026-01-01T00:00:00Z: keeps stored TATs small, so precise
local DAY_US = 86400000000

-- The clock, read once and only by a step that needs it (an adjust of calendar counters does
-- not): now, its offset from EPOCH, its UTC day number and the time until that day ends.
local now, rel, day_number, until_midnight
local function clock()
  if now ~= nil then return end
  if ARGV[2] ~= '' then
    now = tonumber(ARGV[2])
  else
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  rel = now - EPOCH
  day_number = math.floor(now / DAY_US)
  until_midnight = (day_number + 1) * DAY_US - now
end

local function civil(z)
  -- Howard Hinnant's days-to-civil algorithm.
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  -- Howard Hinnant's days-from-civil algorithm.
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local until_month_end
-- a calendar period's time until reset (period 0 DAY, -1 MONTH)
local function until_reset(period)
  if period == 0 then return until_midnight end
  if until_month_end == nil then
    local year, month = civil(day_number)
    local next_month = year * 12 + month -- months since year 0, of the month after this one
    until_month_end = days_from_civil(math.floor(next_month / 12), next_month % 12 + 1, 1)
      * DAY_US - now
  end
  return until_month_end
end

local function integer(value)
  return string.format('%.0f', value)
end

local function limit_args(i)
  local base = 3 + (i - 1) * 3
  return tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
end

local function set_tat(key, tat)
  if tat <= rel then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.17g', tat), 'PX', math.ceil((tat - rel) / 1000) + 1000)
  end
end

-- Float rounding of period/threshold must never cost a whole unit of the burst.
local function slack(interval)
  return math.min(interval / 2, 1)
end

-- Each check returns: fits (1 now, 0 later, -1 never), wait, level before, level after charging.
-- A rate level is how far the TAT runs ahead of now; a day level is the day's usage.
local function check_rate(key, period, limit, cost)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < rel then tat = rel end
  local after = tat - rel + cost * interval
  if after <= period + slack(interval) then return 1, 0, tat - rel, after end
  return 0, after - period, tat - rel, nil
end

local function check_calendar(key, period, limit, cost)
  local used = tonumber(redis.call('GET', key) or '0')
  if used + cost <= limit then return 1, 0, used, used + cost end
  return 0, until_reset(period), used, nil
end

-- remaining units and time until the counter is full again, at a given level
local function room(period, limit, level)
  if period <= 0 then return limit - level, until_reset(period) end
  local interval = period / limit
  return math.floor((period + slack(interval) - level) / interval), level
end

local function admit()
  clock()
  local day = ''
  local allowed = 1
  local checks = {}
  for i = 1, #KEYS do
    local period, limit, cost = limit_args(i)
    local key = KEYS[i]
    if period <= 0 then
      if day == '' then day = string.format('%04d%02d%02d', civil(day_number)) end
      key = key .. ':' .. (period == 0 and day or string.sub(day, 1, 6))
    end
    local fits, wait, before, after
    if limit == 0 or cost > limit then
      fits, wait, before, after = -1, 0, nil, nil
    elseif period <= 0 then
      fits, wait, before, after = check_calendar(key, period, limit, cost)
    else
      fits, wait, before, after = check_rate(key, period, limit, cost)
    end
    if fits ~= 1 then allowed = 0 end
    checks[i] = {key, period, limit, fits, wait, before, after}
  end
  local reply = {allowed, now, day}
  for i = 1, #checks do
    local key, period, limit, fits, wait, before, after = unpack(checks[i], 1, 7)
    local level = before
    if allowed == 1 then level = after end
    local remaining, reset = 0, 0
    if level ~= nil then remaining, reset = room(period, limit, level) end
    if allowed == 1 and period <= 0 then
      redis.call('SET', key, integer(after), 'PX', math.ceil((until_reset(period) + DAY_US) / 1000))
    elseif allowed == 1 then
      set_tat(key, rel + after)
    end
    local n = #reply
    reply[n + 1] = fits
    reply[n + 2] = math.ceil(math.max(wait, 0))
    reply[n + 3] = math.max(math.min(remaining, limit), 0)
    reply[n + 4] = math.ceil(math.max(reset, 0))
  end
  return reply
end

local function adjust()
  for i = 1, #KEYS do
    local period, limit, delta = limit_args(i)
    local key = KEYS[i]
    if delta ~= 0 and period <= 0 then
      if redis.call('EXISTS', key) == 1 then
        if redis.call('INCRBY', key, integer(delta)) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
      end
    elseif delta ~= 0 then
      -- A refund never reaches below now: time already elapsed has refilled the bucket.
      clock()
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < rel then tat = rel end
      set_tat(key, tat + delta * (period / limit))
    end
  end
  return #KEYS
end

if ARGV[1] == 'admit' then return admit() end
return adjust()
