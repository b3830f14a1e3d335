#!lua name=streamnf_v1
-- streamnf state-store functions (Redis 7 Functions). Loaded with FUNCTION LOAD REPLACE by
-- crates/store/src/redis/mod.rs; the library name carries the version of this protocol.
--
-- Value of one state key, at key V:
--   missing   no key              Int(i)     string, canonical decimal
--   Bytes(b)  string 'b' .. b     List([])   string 'l' (Redis cannot hold an empty list)
--   List(..)  a Redis list
-- Encoded values (results, clock-log entries, Set/CAS arguments, notifications):
--   'n' (missing) | 'i' .. decimal | 'b' .. bytes | 'l' .. (8 hex digits length .. item)*
-- Clock log of V: hash L, field = 16 hex digits clock .. ':' .. hex seq, value = encoded
-- result. Integers are never turned into Lua numbers (doubles): INCRBY does exact 64-bit
-- arithmetic and comparisons are on decimal strings.
-- Replies are arrays, never error replies (so one pipelined failure does not hide others):
--   {'ok', result, changed '1'|'0', new value or ''}   applied and logged
--   {'em', result}                                      emulated repeat
--   {'mm', expected type, found type}                   type mismatch (nothing changed)
--   {'no'}                                              not the owner (nothing changed)
--   {'val', value} / {'retry'}                          custom-op read / lost race

local function kind(V)
  local t = redis.call('TYPE', V)['ok']
  if t == 'none' then return 'none', nil end
  if t == 'list' then return 'list', nil end
  local s = redis.call('GET', V)
  local c = string.sub(s, 1, 1)
  if c == 'b' then return 'bytes', s end
  if c == 'l' then return 'empty', nil end
  return 'int', s
end

local function type_name(k)
  if k == 'empty' then return 'list' end
  return k
end

local function encode(V)
  local k, s = kind(V)
  if k == 'none' then return 'n' end
  if k == 'int' then return 'i' .. s end
  if k == 'bytes' then return s end
  if k == 'empty' then return 'l' end
  local items = redis.call('LRANGE', V, 0, -1)
  local parts = {'l'}
  for _, it in ipairs(items) do
    parts[#parts + 1] = string.format('%08x', #it)
    parts[#parts + 1] = it
  end
  return table.concat(parts)
end

local function write(V, e)
  redis.call('DEL', V)
  local c = string.sub(e, 1, 1)
  if c == 'i' then
    redis.call('SET', V, string.sub(e, 2))
  elseif c == 'b' then
    redis.call('SET', V, e)
  elseif c == 'l' then
    if #e == 1 then
      redis.call('SET', V, 'l')
      return
    end
    local pos, n, items = 2, #e, {}
    while pos <= n do
      local len = tonumber(string.sub(e, pos, pos + 7), 16)
      items[#items + 1] = string.sub(e, pos + 8, pos + 7 + len)
      pos = pos + 8 + len
    end
    for i = 1, #items, 512 do
      redis.call('RPUSH', V, unpack(items, i, math.min(i + 511, #items)))
    end
  end
end

-- Compares two canonical decimal integers: -1, 0 or 1.
local function dcmp(a, b)
  if a == b then return 0 end
  local na, nb = string.sub(a, 1, 1) == '-', string.sub(b, 1, 1) == '-'
  if na ~= nb then
    if na then return -1 end
    return 1
  end
  local r
  if #a ~= #b then
    if #a < #b then r = -1 else r = 1 end
  else
    if a < b then r = -1 else r = 1 end
  end
  if na then r = -r end
  return r
end

local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

-- Wrapping 64-bit add of d to the integer at V (h = d wrapping_add i64::MIN, from the client).
local function incr_wrapping(V, d, h)
  if failed(redis.pcall('INCRBY', V, d)) then
    redis.call('INCRBY', V, h)
    if string.sub(d, 1, 1) == '-' then
      redis.call('INCRBY', V, '9223372036854775807')
      redis.call('INCRBY', V, '1')
    else
      redis.call('INCRBY', V, '-9223372036854775808')
    end
  end
  return redis.call('GET', V)
end

local function finish(V, L, field, res, changed, want, chan, hdr)
  redis.call('HSET', L, field, res)
  local newv = ''
  if changed and (want == '1' or chan ~= '') then
    newv = encode(V)
    if chan ~= '' then redis.call('PUBLISH', chan, hdr .. newv) end
  end
  local c = '0'
  if changed then c = '1' end
  return {'ok', res, c, newv}
end

-- KEYS: V, L. ARGV: op, field, owner ('' = shared), issuer, want ('1' = return the new
-- value when changed), channel ('' = do not publish), header, op arguments...
local function op(keys, args)
  local V, L = keys[1], keys[2]
  local o, field, owner, issuer = args[1], args[2], args[3], args[4]
  if owner ~= '' and owner ~= issuer then return {'no'} end
  local done = redis.call('HGET', L, field)
  if done then return {'em', done} end
  local want, chan, hdr = args[5], args[6], args[7]
  local res, changed = 'n', false
  if o == 's' then
    if want == '1' or chan ~= '' then changed = encode(V) ~= args[8] end
    write(V, args[8])
  elseif o == 'r' then
    res = encode(V)
  elseif o == 'd' then
    res = encode(V)
    if res ~= 'n' then
      redis.call('DEL', V)
      changed = true
    end
  elseif o == '+' then
    -- Fast path: INCRBY works on a missing key or an integer without overflow.
    local existed = true
    if args[8] == '0' then existed = redis.call('EXISTS', V) == 1 end
    local r = redis.pcall('INCRBY', V, args[8])
    if not failed(r) then
      local s
      if r > -9007199254740992 and r < 9007199254740992 then
        s = string.format('%d', r)
      else
        s = redis.call('GET', V)
      end
      return finish(V, L, field, 'i' .. s, args[8] ~= '0' or not existed, want, chan, hdr)
    end
    local k = kind(V)
    if k == 'none' then
      redis.call('SET', V, args[8])
      res, changed = 'i' .. args[8], true
    elseif k == 'int' then
      res, changed = 'i' .. incr_wrapping(V, args[8], args[9]), args[8] ~= '0'
    else
      return {'mm', 'int', type_name(k)}
    end
  elseif o == '?' then
    local delta, mn, mx = args[8], args[9], args[10]
    local k, s = kind(V)
    if k ~= 'none' and k ~= 'int' then return {'mm', 'int', type_name(k)} end
    local old = s or '0'
    local new = nil
    if k == 'none' then
      new = delta
    elseif not failed(redis.pcall('INCRBY', V, delta)) then
      new = redis.call('GET', V)
    end
    if new ~= nil and dcmp(mn, new) <= 0 and dcmp(new, mx) <= 0 then
      if k == 'none' then redis.call('SET', V, new) end
      res, changed = 'i' .. new, (k == 'none') or (new ~= old)
    else
      if new ~= nil and k ~= 'none' then redis.call('SET', V, old) end
      res = 'i' .. old
    end
  elseif o == '>' then
    local k = kind(V)
    if k == 'int' or k == 'bytes' then return {'mm', 'list', k} end
    if k == 'empty' then redis.call('DEL', V) end
    local n
    if args[8] == '1' then n = redis.call('RPUSH', V, args[9]) else n = redis.call('LPUSH', V, args[9]) end
    res, changed = 'i' .. n, true
  elseif o == '<' then
    local k = kind(V)
    if k == 'int' or k == 'bytes' then return {'mm', 'list', k} end
    if k == 'empty' then
      redis.call('DEL', V)
    elseif k == 'list' then
      local it
      if args[8] == '1' then it = redis.call('RPOP', V) else it = redis.call('LPOP', V) end
      res, changed = 'b' .. it, true
    end
  elseif o == '=' then
    local cur = encode(V)
    if cur == args[8] then
      if args[9] ~= cur then
        write(V, args[9])
        changed = true
      end
      res = 'i1'
    else
      res = 'i0'
    end
  else
    return redis.error_reply('streamnf: unknown op ' .. o)
  end
  return finish(V, L, field, res, changed, want, chan, hdr)
end

-- KEYS: V. The encoded value.
local function get(keys, _args)
  return encode(keys[1])
end

-- Custom ops, step 1. KEYS: V, L. ARGV: field. The logged result, or the current value.
local function cread(keys, args)
  local done = redis.call('HGET', keys[2], args[1])
  if done then return {'em', done} end
  return {'val', encode(keys[1])}
end

-- Custom ops, step 2: compare-and-set on the whole value, log, notify. KEYS: V, L.
-- ARGV: field, owner, issuer, want, channel, header, expected, new, result.
local function ccommit(keys, args)
  local V, L = keys[1], keys[2]
  if args[2] ~= '' and args[2] ~= args[3] then return {'no'} end
  local done = redis.call('HGET', L, args[1])
  if done then return {'em', done} end
  local cur = encode(V)
  if cur ~= args[7] then return {'retry'} end
  local changed = args[8] ~= cur
  if changed then write(V, args[8]) end
  return finish(V, L, args[1], args[9], changed, args[4], args[5], args[6])
end

-- Forgets log entries whose clock (16 hex digits) sorts below ARGV[1]. KEYS: L.
-- Returns the number of entries left.
local function gc(keys, args)
  local fields = redis.call('HKEYS', keys[1])
  local del = {}
  for _, f in ipairs(fields) do
    if string.sub(f, 1, 16) < args[1] then del[#del + 1] = f end
  end
  for i = 1, #del, 512 do
    redis.call('HDEL', keys[1], unpack(del, i, math.min(i + 511, #del)))
  end
  return #fields - #del
end

-- Timers: KEYS Z (sorted set, score 0, member = hex16 at .. hex16 id), D (hash id -> member
-- .. data). Idempotent: ARGV id, member, data.
local function tsched(keys, args)
  redis.call('ZADD', keys[1], 0, args[2])
  redis.call('HSET', keys[2], args[1], args[2] .. args[3])
  return 1
end

-- KEYS: Z, D, R (reply cache of this call's token). ARGV: id. 1 if it was pending.
local function tcancel(keys, args)
  local prev = redis.call('GET', keys[3])
  if prev then return tonumber(prev) end
  local v = redis.call('HGET', keys[2], args[1])
  local r = 0
  if v then
    redis.call('ZREM', keys[1], string.sub(v, 1, 32))
    redis.call('HDEL', keys[2], args[1])
    r = 1
  end
  redis.call('SET', keys[3], r, 'EX', 120)
  return r
end

-- KEYS: Z, D, R. ARGV: exclusive upper bound for ZRANGEBYLEX. Pops the due timers and
-- returns them as one blob of (8 hex digits length .. member .. data)*.
local function tdue(keys, args)
  local prev = redis.call('GET', keys[3])
  if prev then return prev end
  local members = redis.call('ZRANGEBYLEX', keys[1], '-', args[1])
  local parts = {}
  for _, m in ipairs(members) do
    local id = string.sub(m, 17, 32)
    local v = redis.call('HGET', keys[2], id)
    if v then
      parts[#parts + 1] = string.format('%08x', #v)
      parts[#parts + 1] = v
      redis.call('HDEL', keys[2], id)
    end
    redis.call('ZREM', keys[1], m)
  end
  local blob = table.concat(parts)
  redis.call('SET', keys[3], blob, 'EX', 120)
  return blob
end

redis.register_function('snf_op', op)
redis.register_function{function_name = 'snf_get', callback = get, flags = {'no-writes'}}
redis.register_function{function_name = 'snf_cread', callback = cread, flags = {'no-writes'}}
redis.register_function('snf_ccommit', ccommit)
redis.register_function('snf_gc', gc)
redis.register_function('snf_tsched', tsched)
redis.register_function('snf_tcancel', tcancel)
redis.register_function('snf_tdue', tdue)
