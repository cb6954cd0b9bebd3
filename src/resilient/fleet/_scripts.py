"""The Lua scripts that keep a fleet's shared state in Redis, and their keys.

Every decision that several replicas could race on is one script: Redis runs a script
atomically, so "add this batch to the window, and open the breaker if the rates cross the
thresholds" or "take a token if there is one" can never interleave with another replica's.
Time is the server's (``TIME``), so replicas' clocks never need to agree.

Numbers in Redis are strings: times are integer microseconds of the server clock, window
totals are written with ``%.17g`` (a count window trims its oldest batch proportionally, so
totals may be fractional).
"""

from __future__ import annotations

__all__ = ["BREAKER", "BUCKET", "breaker_keys", "bucket_key"]


def _entity(prefix: str, kind: str, name: str) -> str:
    # The braces are a Redis Cluster hash tag: every key of one breaker maps to one slot, so
    # its script may touch them all.
    return f"{prefix}:{{{kind}:{name}}}"


def breaker_keys(prefix: str, name: str) -> list[str]:
    """The four keys of a shared breaker: its record (hash), its window (list of batches),
    its running trials (sorted set, by admission time) and its replicas (hash, last seen)."""
    base = _entity(prefix, "breaker", name)
    return [base, f"{base}:window", f"{base}:trials", f"{base}:replicas"]


def bucket_key(prefix: str, name: str) -> str:
    """The key of a shared rate limiter's token bucket."""
    return _entity(prefix, "ratelimit", name)


BREAKER = r"""
-- One fleet-wide circuit breaker. KEYS: record, window, trials, replicas.
-- ARGV: op, replica id, window type, window size, minimum calls, failure rate threshold,
-- slow rate threshold (-1: off), half-open max calls, half-open max wait (us, -1: none),
-- replica lease (us), next open duration (us), key ttl (ms), then the op's own arguments:
--   sync   incarnation, epoch, calls, failures, slow calls (the replica's batch)
--   trial  trial id
--   finish incarnation, epoch, trial id, outcome (ok | fail | release)
--   set    target state (or 'reset')
-- Returns {incarnation, epoch, state, open time left (us), times opened,
--          window calls, failures, slow calls, granted (trial op: 1 when admitted)}.
local H, W, T, R = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, rid = ARGV[1], ARGV[2]
local wtype, wsize, minc = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local frt, srt = tonumber(ARGV[6]), tonumber(ARGV[7])
local homax, howait = tonumber(ARGV[8]), tonumber(ARGV[9])
local lease, nextopen, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local sec = tonumber(clock[1])
local EPS = 1e-9

local function num(x) return string.format('%.17g', x) end

local f = redis.call('HMGET', H, 'inc', 'ep', 'st', 'ou', 'no', 'ok', 'wc', 'wf', 'ws')
local inc, ep, st, ou, nop, ok, wc, wf, ws = f[1], 0, 'closed', 0, 0, 0, 0, 0, 0
if inc then
  ep, st, ou, nop = tonumber(f[2]), f[3], tonumber(f[4]), tonumber(f[5])
  ok, wc, wf, ws = tonumber(f[6]), tonumber(f[7]), tonumber(f[8]), tonumber(f[9])
else
  -- a new record (first use, or the old one was lost): a new incarnation, so replicas
  -- never mistake its epochs for the old record's
  inc = clock[1] .. '.' .. clock[2] .. '.' .. rid
  redis.call('DEL', W, T)
end

local function transition(to, at)
  st = to
  ep = ep + 1
  ok, wc, wf, ws = 0, 0, 0, 0
  redis.call('DEL', W, T)
  if to == 'open' then
    nop = nop + 1
    ou = at + nextopen
  elseif to == 'closed' then
    nop = 0
  end
end

-- the transitions that are due by now (as the local core's _tick)
local function tick()
  while true do
    if st == 'open' then
      if now < ou then return end
      transition('half_open', now)
    elseif st == 'half_open' then
      local trials = redis.call('ZRANGE', T, 0, -1, 'WITHSCORES')
      local first = nil
      for i = 1, #trials, 2 do
        local owner = string.match(trials[i], '^(.*)/')
        local seen = tonumber(redis.call('HGET', R, owner) or '0')
        if seen + lease < now then
          redis.call('ZREM', T, trials[i])  -- its replica is gone: the slot goes back
        elseif not first then
          first = tonumber(trials[i + 1])
        end
      end
      if howait < 0 or not first or now < first + howait then return end
      transition('open', first + howait)  -- a trial overran: re-open as of its deadline
    else
      return
    end
  end
end

local function parse(entry)
  local s, c, fl, sl = string.match(entry, '^(%S+) (%S+) (%S+) (%S+)$')
  return tonumber(s), tonumber(c), tonumber(fl), tonumber(sl)
end

-- drop what has left the window: seconds older than the window (time), or the oldest
-- calls beyond the window size (count; the oldest batch is trimmed proportionally)
local function trim()
  if wtype == 'time' then
    while true do
      local head = redis.call('LINDEX', W, 0)
      if not head then break end
      local s, c, fl, sl = parse(head)
      if s > sec - wsize then break end
      redis.call('LPOP', W)
      wc, wf, ws = wc - c, wf - fl, ws - sl
    end
  else
    local excess = wc - wsize
    while excess > EPS do
      local head = redis.call('LINDEX', W, 0)
      if not head then break end
      local s, c, fl, sl = parse(head)
      if c <= excess + EPS then
        redis.call('LPOP', W)
        wc, wf, ws = wc - c, wf - fl, ws - sl
        excess = excess - c
      else
        local keep = (c - excess) / c
        redis.call('LSET', W, 0, '0 ' .. num(c - excess) .. ' ' .. num(fl * keep) .. ' '
          .. num(sl * keep))
        wc, wf, ws = wc - excess, wf - fl + fl * keep, ws - sl + sl * keep
        excess = 0
      end
    end
  end
  if redis.call('LLEN', W) == 0 then wc, wf, ws = 0, 0, 0 end
end

local function add(c, fl, sl)
  if wtype == 'time' then
    local tail = redis.call('LINDEX', W, -1)
    local s, tc, tf, ts
    if tail then s, tc, tf, ts = parse(tail) end
    if tail and s >= sec then
      redis.call('LSET', W, -1, num(s) .. ' ' .. num(tc + c) .. ' ' .. num(tf + fl) .. ' '
        .. num(ts + sl))
    else
      redis.call('RPUSH', W, num(sec) .. ' ' .. num(c) .. ' ' .. num(fl) .. ' ' .. num(sl))
    end
  else
    redis.call('RPUSH', W, '0 ' .. num(c) .. ' ' .. num(fl) .. ' ' .. num(sl))
  end
  wc, wf, ws = wc + c, wf + fl, ws + sl
end

local function check()
  if st ~= 'closed' or wc <= 0 or wc < minc - EPS then return end
  if wf >= frt * wc - EPS or (srt >= 0 and ws >= srt * wc - EPS) then
    transition('open', now)
  end
end

redis.call('HSET', R, rid, now)
tick()
trim()
local granted = 0
if op == 'sync' then
  if (st == 'closed' or st == 'metrics_only') and ARGV[13] == inc
      and tonumber(ARGV[14]) == ep then
    local c = tonumber(ARGV[15])
    if c > 0 then
      add(c, tonumber(ARGV[16]), tonumber(ARGV[17]))
      trim()
      check()
    end
  end
  local seen = redis.call('HGETALL', R)
  for i = 1, #seen, 2 do
    if tonumber(seen[i + 1]) + 10 * lease < now then redis.call('HDEL', R, seen[i]) end
  end
elseif op == 'trial' then
  if st == 'half_open' and redis.call('ZCARD', T) + ok < homax then
    redis.call('ZADD', T, now, ARGV[13])
    granted = 1
  end
elseif op == 'finish' then
  if st == 'half_open' and ARGV[13] == inc and tonumber(ARGV[14]) == ep
      and redis.call('ZREM', T, ARGV[15]) == 1 then
    if ARGV[16] == 'fail' then
      transition('open', now)
    elseif ARGV[16] == 'ok' then
      ok = ok + 1
      if ok >= homax then transition('closed', now) end
    end
  end
elseif op == 'set' then
  if ARGV[13] == 'reset' then
    transition('closed', now)
  elseif ARGV[13] ~= st then
    transition(ARGV[13], now)
  end
end

redis.call('HSET', H, 'inc', inc, 'ep', num(ep), 'st', st, 'ou', num(ou), 'no', num(nop),
  'ok', num(ok), 'wc', num(wc), 'wf', num(wf), 'ws', num(ws))
for _, key in ipairs({H, W, T, R}) do redis.call('PEXPIRE', key, ttl) end
local left = 0
if st == 'open' then left = ou - now end
return {inc, ep, st, left, nop, num(wc), num(wf), num(ws), granted}
"""

BUCKET = r"""
-- One fleet-wide token bucket. KEYS: the bucket (hash: tokens, last update in us).
-- ARGV: microseconds per token, burst (bucket size), tokens wanted, tokens given back.
-- Returns {tokens granted, us until the next token (0 when all wanted were granted),
--          tokens left (string)}.
local K = KEYS[1]
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, back = tonumber(ARGV[3]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local f = redis.call('HMGET', K, 'tk', 'ts')
local tokens, ts = tonumber(f[1]), tonumber(f[2])
if not tokens then tokens, ts = burst, now end  -- a bucket starts full
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) / interval)
  ts = now
end
tokens = math.min(burst, tokens + back)
local granted = 0
if want > 0 and tokens >= 1 - 1e-9 then
  granted = math.min(want, math.floor(tokens + 1e-9))
  tokens = math.max(0, tokens - granted)
end
local wait = 0
if granted < want then wait = math.ceil(math.max(0, 1 - tokens) * interval) end
redis.call('HSET', K, 'tk', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
-- a bucket left alone refills; once full it is the same as no bucket at all
redis.call('PEXPIRE', K, math.ceil(burst * interval / 1000) + 1000)
return {granted, wait, string.format('%.17g', tokens)}
"""
