-- One target's circuit breaker (routing/circuit.py), atomically for every worker and node.
-- KEYS[1]: the breaker hash {f: consecutive failures, s: closed|open|half, u: open until (ms),
--          l: last failure (ms), p: the probe's lease end (ms)}
-- ARGV: op (fail | ok | probe), now (ms), failures that open it, cooldown (ms), probe lease (ms),
--       key lifetime (ms)
-- Returns {state after, state before}.
local key, op, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
local state = redis.call('HGET', key, 's') or 'closed'
local before = state
if op == 'fail' then
  local failures = redis.call('HINCRBY', key, 'f', 1)
  redis.call('HSET', key, 'l', now)
  if state == 'half' or (state == 'closed' and failures >= tonumber(ARGV[3])) then
    state = 'open'
    redis.call('HSET', key, 's', state, 'u', now + tonumber(ARGV[4]), 'p', 0)
  end
elseif op == 'ok' then
  if state ~= 'closed' or redis.call('HGET', key, 'f') then
    redis.call('DEL', key)
  end
  return {'closed', before}
elseif op == 'probe' then
  local lease = tonumber(redis.call('HGET', key, 'p') or '0')
  local ripe = state == 'open' and now >= tonumber(redis.call('HGET', key, 'u') or '0')
  if not ((ripe or state == 'half') and now >= lease) then
    return {'busy', before}
  end
  state = 'half'
  redis.call('HSET', key, 's', state, 'p', now + tonumber(ARGV[5]))
end
redis.call('PEXPIRE', key, tonumber(ARGV[6]))
return {state, before}
