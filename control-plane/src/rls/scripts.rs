//! One Lua script per algorithm, atomic per counter. Each counter is one Redis HASH
//! (`a` = algorithm tag, then the algorithm's fields) with a TTL after which the
//! counter is indistinguishable from a fresh one, so expiry never changes a decision.
//! Time is the Redis server's `TIME` in microseconds (replicas of the service with
//! skewed clocks agree); arithmetic is on Lua doubles, exact for integers below 2^53
//! (timestamps, counts, micro-tokens up to 10^15).
//!
//! Every script: `KEYS[1]` the counter, `ARGV` = (requests, window µs, burst, hits) and
//! returns `{allowed 0|1, remaining, µs}` where µs is, when allowed, the time until
//! the quota is whole again (token bucket: full; windows: the window's end) and, when
//! denied, the time until this request would be admitted. Denials write nothing (only
//! admitted hits are counted, like the filter, so a client that backs off recovers).
//!
//! The algorithm tag includes the window for the windows: changing a rule's `per` or
//! algorithm starts its counters afresh; changing `requests` or `burst` keeps them.

use std::sync::LazyLock;

use redis::Script;

use super::limit::{Algorithm, Limit};

/// The Lua integers go through `%.14g` when passed to `redis.call` as numbers: anything
/// that may exceed 14 digits (timestamps, micro-tokens) is formatted with `%.0f`.
const PRELUDE: &str = r#"
local key = KEYS[1]
local requests = tonumber(ARGV[1])
local width = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local hits = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local function int(n) return string.format('%.0f', n) end
local function ttl(micros) return math.ceil(micros / 1000) + 1 end
"#;

/// Capacity `burst` tokens, refilled at `requests` per `width`; tokens kept in
/// millionths (`t`) with the time of the last refill (`ts`). TTL: until full.
const TOKEN_BUCKET: &str = r#"
local SCALE = 1000000
local capacity = burst * SCALE
local rate = requests * SCALE / width
local tokens = capacity
local state = redis.call('HMGET', key, 'a', 't', 'ts')
if state[1] == 'tb' then
  local stored, last = tonumber(state[2]), tonumber(state[3])
  if stored and last then
    if now < last then now = last end
    tokens = math.min(capacity, stored + math.floor((now - last) * rate))
  end
elseif state[1] then
  redis.call('DEL', key)
end
local need = hits * SCALE
if tokens >= need then
  local left = tokens - need
  local to_full = math.ceil((capacity - left) / rate)
  redis.call('HSET', key, 'a', 'tb', 't', int(left), 'ts', int(now))
  redis.call('PEXPIRE', key, ttl(to_full))
  return {1, math.floor(left / SCALE), to_full}
end
if need > capacity then
  return {0, 0, math.ceil(capacity / rate)}
end
return {0, 0, math.ceil((need - tokens) / rate)}
"#;

/// Counts of the previous (`p`) and current (`c`) fixed window `w`; the estimate is
/// `p × (share of the previous window still inside the sliding one) + c`, compared
/// scaled by the width so it stays integral. TTL: the end of the next window.
const SLIDING_WINDOW: &str = r#"
local tag = 'sw:' .. ARGV[2]
local index = math.floor(now / width)
local elapsed = now - index * width
if elapsed < 0 then index = index - 1; elapsed = elapsed + width end
if elapsed >= width then index = index + 1; elapsed = elapsed - width end
local prev, cur = 0, 0
local state = redis.call('HMGET', key, 'a', 'w', 'p', 'c')
if state[1] == tag then
  local w, p, c = tonumber(state[2]), tonumber(state[3]) or 0, tonumber(state[4]) or 0
  if w == index then
    prev, cur = p, c
  elseif w == index - 1 then
    prev = c
  elseif w and w > index then
    prev, cur, index, elapsed = p, c, w, 0
  end
elseif state[1] then
  redis.call('DEL', key)
end
local budget = requests * width
local until_end = width - elapsed
local after = prev * (width - elapsed) + (cur + hits) * width
if after <= budget then
  redis.call('HSET', key, 'a', tag, 'w', int(index), 'p', int(prev), 'c', int(cur + hits))
  redis.call('PEXPIRE', key, ttl(until_end + width))
  return {1, math.floor((budget - after) / width), until_end}
end
-- Denied: the earliest time the request fits, later in this window as the previous
-- window's weight decays, else in a later window as this one's does.
if hits > requests then
  return {0, 0, until_end + width}
end
local spare = requests - cur - hits
if spare >= 0 and prev > 0 then
  local wait_until = width - math.floor(spare * width / prev)
  if wait_until < width then
    return {0, 0, math.max(1, wait_until - elapsed)}
  end
end
local t = 0
if cur > 0 then
  t = math.max(0, width - math.floor((requests - hits) * width / cur))
end
return {0, 0, until_end + t}
"#;

/// `c` requests in the aligned window `w`. TTL: the window's end.
const FIXED_WINDOW: &str = r#"
local tag = 'fw:' .. ARGV[2]
local index = math.floor(now / width)
local elapsed = now - index * width
if elapsed < 0 then index = index - 1; elapsed = elapsed + width end
if elapsed >= width then index = index + 1; elapsed = elapsed - width end
local count = 0
local state = redis.call('HMGET', key, 'a', 'w', 'c')
if state[1] == tag and tonumber(state[2]) == index then
  count = tonumber(state[3]) or 0
elseif state[1] then
  redis.call('DEL', key)
end
local until_end = width - elapsed
if count + hits <= requests then
  redis.call('HSET', key, 'a', tag, 'w', int(index), 'c', int(count + hits))
  redis.call('PEXPIRE', key, ttl(until_end))
  return {1, requests - count - hits, until_end}
end
if hits > requests then
  return {0, 0, until_end + width}
end
return {0, 0, until_end}
"#;

static SCRIPTS: LazyLock<[Script; 3]> = LazyLock::new(|| {
    [TOKEN_BUCKET, SLIDING_WINDOW, FIXED_WINDOW]
        .map(|body| Script::new(&format!("{PRELUDE}{body}")))
});

/// The script for `algorithm` and its name in the `redis_*{op}` metrics.
pub fn script(algorithm: Algorithm) -> (&'static Script, &'static str) {
    match algorithm {
        Algorithm::TokenBucket => (&SCRIPTS[0], "rls_token_bucket"),
        Algorithm::SlidingWindow => (&SCRIPTS[1], "rls_sliding_window"),
        Algorithm::FixedWindow => (&SCRIPTS[2], "rls_fixed_window"),
    }
}

/// The script's arguments after the key.
pub fn args(limit: &Limit, hits: u64) -> [u64; 4] {
    [limit.requests, limit.per_micros, limit.burst, hits]
}
