-- examples/redis.lua: a Redis-protocol key-value server (strings only).
--
-- Try it:
--   hotsock -l 127.0.0.1:6380 examples/redis.lua
--   redis-cli -p 6380 ping                       # PONG
--   redis-cli -p 6380 set greeting hi EX 60      # OK
--   redis-benchmark -p 6380 -q -t set,get -P 16  # pipelined load
--
-- RESP2 and inline commands (`printf 'PING\r\n' | nc 127.0.0.1 6380`).
-- Commands: PING ECHO SET (EX PX EXAT PXAT NX XX KEEPTTL GET) GET GETSET
-- SETNX MGET MSET APPEND STRLEN DEL UNLINK EXISTS TYPE INCR DECR INCRBY
-- DECRBY EXPIRE PEXPIRE PERSIST TTL PTTL KEYS DBSIZE FLUSHALL FLUSHDB
-- SELECT QUIT, and enough of COMMAND, CLIENT, CONFIG GET, HELLO and INFO for
-- redis-cli and redis-benchmark to start.
--
-- Event style over "resp" framing: the host parses the protocol in C and
-- calls on_message once per command with its arguments; the replies to the
-- commands of one read go out in one write (a client pipelining 16
-- commands costs one read and one write). A reply carrying a stored value
-- goes out as pieces (header, value, CRLF) that conn:send writes as one
-- vector, so a big value is never copied into a new Lua string.
-- The data lives in hs.shared, so editing this file while clients are
-- connected keeps both the clients and the keys. Keys with a time to live
-- expire lazily when touched, and a timer sweeps a few of them every 100 ms.
--
-- maxmemory: the data lives in the Lua heap, capped by max_lua_memory
-- (--max-lua-memory). Near the cap, writes are refused as Redis refuses
-- them over maxmemory (-OOM ...) while reads and deletes keep working:
--   hotsock -l 127.0.0.1:6380 --max-lua-memory 8388608 examples/redis.lua
--   redis-cli -p 6380 info memory                    # used, maxmemory
--   redis-benchmark -p 6380 -q -t set -d 60000 -r 1000   # stops at -OOM
local hs = require "hotsock"
local resp = require "hotsock.resp"

local S = hs.shared.redis
if not S then
  S = { db = {}, exp = {}, n = 0, cursor = nil }
  hs.shared.redis = S
end

local OK, PONG, NULL = "+OK\r\n", "+PONG\r\n", "$-1\r\n"
local bulk, bulk_parts, bulk_head = resp.bulk, resp.bulk_parts, resp.bulk_head
local integer, err = resp.integer, resp.error
local E_SYNTAX = "-ERR syntax error\r\n"
local E_INT = "-ERR value is not an integer or out of range\r\n"

local INT64_MAX, INT64_MIN = math.maxinteger, math.mininteger

-- a Redis integer: optional minus, digits, no leading zeros, in int64
local function toint(s)
  if not s:find("^%-?%d+$") or #s > 20 or s:find("^%-?0%d") or s == "-0" then return nil end
  return math.tointeger(tonumber(s))
end

---------------------------------------------------------------------------
-- the keyspace
---------------------------------------------------------------------------

local function now() return hs.now() end

local function delete(key)
  if S.db[key] ~= nil then
    S.db[key] = nil
    S.exp[key] = nil
    S.n = S.n - 1
    return true
  end
  return false
end

-- the live value of key (an expired key is deleted on the way)
local function lookup(key)
  local v = S.db[key]
  if v == nil then return nil end
  local t = S.exp[key]
  if t and t <= now() then
    delete(key)
    return nil
  end
  return v
end

local function store(key, value, keep_ttl)
  if S.db[key] == nil then S.n = S.n + 1 end
  S.db[key] = value
  if not keep_ttl then S.exp[key] = nil end
end

-- Check up to `batch` keys that have a time to live and delete the ones
-- that expired, resuming where the last sweep stopped. Returns how many
-- were checked and how many deleted.
local function sweep_batch(batch)
  local exp, t = S.exp, now()
  local k = S.cursor
  if k ~= nil and exp[k] == nil then k = nil end -- gone meanwhile: start over
  local checked, gone = 0, 0
  for _ = 1, batch do
    local deadline
    k, deadline = next(exp, k) -- clearing a visited key keeps next() valid
    if k == nil then break end
    checked = checked + 1
    if deadline <= t then
      delete(k)
      gone = gone + 1
    end
  end
  if k ~= nil and exp[k] == nil then k = next(exp, k) end
  S.cursor = k
  return checked, gone
end

-- Every 100 ms: sweep batches while more than a quarter of a batch had
-- expired, for at most ~5 ms of CPU.
function S.sweep()
  local start = os.clock()
  repeat
    local checked, gone = sweep_batch(200)
  until gone * 4 <= checked or os.clock() - start > 0.005
end

-- one sweeper for the life of the process; a reload only swaps S.sweep
if not S.sweeper then
  S.sweeper = hs.every(100, function() S.sweep() end)
end

---------------------------------------------------------------------------
-- maxmemory
---------------------------------------------------------------------------

-- Commands that can grow the data (Redis's "denyoom" ones: SET, SETNX,
-- GETSET, MSET, APPEND, INCR and kin) are refused with -OOM while the Lua
-- heap holds more than maxmemory: max_lua_memory less a tenth of it, or
-- less room for one command of max_frame bytes when that is more. The room
-- is for what still runs: reads, deletes, the commands coming in. An
-- allocation past the cap fails the handler, and that costs the client its
-- connection.
--
-- Looking at the heap is collectgarbage("count"), about 30 ns (hs.stats()
-- builds a table: about 550 ns). Even so, a look and a call on every SET
-- cost 5-8 % of pipelined SETs, so a write only adds up the bytes it
-- stores, and the heap is looked at once 64 KiB were written since the
-- last look (a 60 KB SET looks at once), and at every write while it is
-- over the line. The heap counts garbage too, so a write that finds it
-- over the line first runs a full collection and looks again. When the
-- live data itself is over the line, the next collection waits ten times
-- as long as the last one took: they take at most a tenth of the time.
local MAX_FRAME = 1024 * 1024 -- the module's max_frame, below
local LOOK_EVERY = 64 * 1024
local E_OOM = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
local gc = collectgarbage
local max_kb = -1             -- maxmemory in KiB (collectgarbage's unit); -1: not read
local unlooked = LOOK_EVERY   -- bytes written since the last look: the first write looks
local next_gc = 0             -- hs.now() before which no collection is forced

-- maxmemory in bytes (0: no cap), from the cap in force. A module's own
-- max_lua_memory applies once the chunk has run: it is read at the first
-- write after each load.
local function maxmemory()
  local cap = hs.stats().lua_memory_limit or 0
  if cap <= 0 then
    max_kb = math.huge
    return 0
  end
  local max = math.max(cap - math.max(cap // 10, MAX_FRAME + 65536), 0)
  max_kb = max / 1024
  return max
end

-- Look at the heap: whether it is over maxmemory, with `more` bytes a
-- write is about to allocate.
local function over(more)
  if max_kb < 0 then maxmemory() end
  if gc("count") + more / 1024 > max_kb then
    unlooked = LOOK_EVERY -- over the line: the next write looks too
    local t = now()
    if t < next_gc then return true end
    local c0 = os.clock()
    gc("collect")
    next_gc = t + (os.clock() - c0) * 10000 -- ten times its ms
    if gc("count") + more / 1024 > max_kb then return true end
  end
  unlooked = 0
  return false
end

-- Whether a write must be refused that stores `bytes` of its arguments
-- (already in the heap) and allocates `more` (APPEND's copy).
local function oom(bytes, more)
  more = more or 0
  local u = unlooked + bytes + more
  if u < LOOK_EVERY then
    unlooked = u + 128 -- a table slot, string headers
    return false
  end
  return over(more)
end

-- Redis glob matching: * ? [abc] [^abc] [a-z] and \x (a literal x, also
-- inside brackets). An unclosed [ runs to the end of the pattern; a - right
-- before ] is a literal - (Redis reads a range up to the ]).
--
-- Written in Lua on purpose. A glob turned into a Lua pattern with several
-- .* is matched by string.find in C, backtracking exponentially in the
-- number of stars (KEYS *a*a*b on one 2000-byte key of a's took 6 s, and
-- every other star multiplies that; Redis had the same, CVE-2022-36021),
-- and handler_budget cannot stop a call into C. This loop remembers only
-- the last star: when a match fails, that star takes one more byte of the
-- key and matching resumes right after it (an earlier star never needs to
-- take more), so a key costs at most len(pattern) * len(key) steps of a
-- few Lua instructions, which the budget can stop. Nothing is allocated.
local byte = string.byte

-- Does the bracket class starting at g[p] (just after "[") take byte c?
-- Returns that, and the position of its "]" (past the end if unclosed).
local function class_has(g, p, glen, c)
  local neg = byte(g, p) == 94 -- ^
  if neg then p = p + 1 end
  local hit = false
  while p <= glen do
    local a = byte(g, p)
    if a == 92 and p < glen then -- \x
      p = p + 1
      if byte(g, p) == c then hit = true end
    elseif a == 93 then -- ]
      break
    elseif p + 2 <= glen and byte(g, p + 1) == 45 and byte(g, p + 2) ~= 93 then -- a-z
      local lo, hi = a, byte(g, p + 2)
      if lo > hi then lo, hi = hi, lo end
      if c >= lo and c <= hi then hit = true end
      p = p + 2
    elseif a == c then
      hit = true
    end
    p = p + 1
  end
  return hit ~= neg, p
end

local function glob_match(g, s)
  local glen, slen = #g, #s
  local p, i = 1, 1      -- next pattern byte, next key byte
  local sp, si = nil, 0  -- after the last star: pattern position, key position
  while i <= slen do
    local a = byte(g, p)
    if a == 42 then -- *
      repeat p = p + 1 until byte(g, p) ~= 42
      if p > glen then return true end -- a trailing star takes the rest
      sp, si = p, i
    else
      local c, ok, np = byte(s, i), false, p + 1
      if a == nil then ok = false -- pattern used up, key not
      elseif a == 63 then ok = true -- ?
      elseif a == 91 then -- [
        ok, np = class_has(g, p + 1, glen, c)
        np = np + 1
      elseif a == 92 and p < glen then -- \x
        ok, np = byte(g, p + 1) == c, p + 2
      else
        ok = a == c
      end
      if ok then
        p, i = np, i + 1
      elseif sp then -- the last star takes one more byte, and retry
        si = si + 1
        p, i = sp, si
      else
        return false
      end
    end
  end
  while byte(g, p) == 42 do p = p + 1 end
  return p > glen
end

---------------------------------------------------------------------------
-- commands: each gets (conn, argv, n) and returns the reply: a string,
-- several strings or one list of strings, all for one conn:send
---------------------------------------------------------------------------

local C = {}     -- name -> function
local ARITY = {} -- name -> n (exactly n args) or -n (at least n), name included

local function def(name, arity, fn)
  C[name] = fn
  ARITY[name] = arity
end

def("ping", -1, function(_, a, n)
  if n > 2 then return err("ERR wrong number of arguments for 'ping' command") end
  if n == 2 then return bulk_parts(a[2]) end
  return PONG
end)

def("echo", 2, function(_, a) return bulk_parts(a[2]) end)

def("quit", -1, function(_, a)
  a.quit = true -- on_message closes the connection after the reply
  return OK
end)

local function set_expiry(key, ms)
  S.exp[key] = now() + ms
end

def("set", -3, function(_, a, n)
  local key, value = a[2], a[3]
  local u = unlooked + #key + #value -- oom(#key + #value), inlined: the hot path
  if u < LOOK_EVERY then unlooked = u + 128 elseif over(0) then return E_OOM end
  local nx, xx, get, keep, ttl = false, false, false, false, nil
  local i = 4
  while i <= n do
    local o = a[i]:upper()
    if o == "NX" and not xx then nx = true
    elseif o == "XX" and not nx then xx = true
    elseif o == "GET" then get = true
    elseif o == "KEEPTTL" and not ttl then keep = true
    elseif (o == "EX" or o == "PX" or o == "EXAT" or o == "PXAT") and not ttl and not keep and i < n then
      i = i + 1
      local v = toint(a[i])
      if not v then return E_INT end
      if v <= 0 then return err("ERR invalid expire time in 'set' command") end
      if o == "EX" then
        if v > INT64_MAX // 1000 then return err("ERR invalid expire time in 'set' command") end
        ttl = v * 1000
      elseif o == "PX" then ttl = v
      elseif o == "EXAT" then ttl = v * 1000 - os.time() * 1000
      else ttl = v - os.time() * 1000 end
    else
      return E_SYNTAX
    end
    i = i + 1
  end
  local old
  if n > 3 then -- the old value matters to NX, XX, GET, and KEEPTTL (expired?)
    old = lookup(key)
    if (nx and old ~= nil) or (xx and old == nil) then
      if get then return bulk_parts(old) end
      return NULL
    end
  end
  store(key, value, keep)
  if ttl then
    if ttl <= 0 then delete(key) else set_expiry(key, ttl) end
  end
  if get then return bulk_parts(old) end
  return OK
end)

def("get", 2, function(_, a) -- bulk_parts without its type check: values are strings
  local v = lookup(a[2])
  if v == nil then return NULL end
  return bulk_head(#v), v, "\r\n"
end)

def("getset", 3, function(_, a)
  if oom(#a[2] + #a[3]) then return E_OOM end
  local old = lookup(a[2])
  store(a[2], a[3])
  return bulk_parts(old)
end)

def("setnx", 3, function(_, a)
  if oom(#a[2] + #a[3]) then return E_OOM end
  if lookup(a[2]) ~= nil then return ":0\r\n" end
  store(a[2], a[3])
  return ":1\r\n"
end)

-- one list of pieces: the values are not copied into one reply string
def("mget", -2, function(_, a, n)
  local out, j = { "*" .. (n - 1) .. "\r\n" }, 1
  for i = 2, n do
    local v = lookup(a[i])
    if v == nil then
      out[j + 1], j = NULL, j + 1
    else
      out[j + 1], out[j + 2], out[j + 3], j = bulk_head(#v), v, "\r\n", j + 3
    end
  end
  return out
end)

def("mset", -3, function(_, a, n)
  if n % 2 == 0 then return err("ERR wrong number of arguments for 'mset' command") end
  local bytes = 0
  for i = 2, n do bytes = bytes + #a[i] + 64 end
  if oom(bytes) then return E_OOM end
  for i = 2, n, 2 do store(a[i], a[i + 1]) end
  return OK
end)

def("append", 3, function(_, a)
  local old = lookup(a[2]) or ""
  -- the new value is a copy of both, made here
  if oom(#a[2], #old + #a[3]) then return E_OOM end
  local v = old .. a[3]
  store(a[2], v, true)
  return integer(#v)
end)

def("strlen", 2, function(_, a) return integer(#(lookup(a[2]) or "")) end)

local function del(_, a, n)
  local c = 0
  for i = 2, n do
    if lookup(a[i]) ~= nil and delete(a[i]) then c = c + 1 end
  end
  return integer(c)
end
def("del", -2, del)
def("unlink", -2, del)

def("exists", -2, function(_, a, n)
  local c = 0
  for i = 2, n do if lookup(a[i]) ~= nil then c = c + 1 end end
  return integer(c)
end)

def("type", 2, function(_, a)
  return lookup(a[2]) ~= nil and "+string\r\n" or "+none\r\n"
end)

local function incr_by(key, by)
  if oom(#key + 20) then return E_OOM end
  local v = lookup(key)
  local cur = 0
  if v ~= nil then
    cur = toint(v)
    if not cur then return E_INT end
  end
  if (by > 0 and cur > INT64_MAX - by) or (by < 0 and cur < INT64_MIN - by) then
    return err("ERR increment or decrement would overflow")
  end
  cur = cur + by
  store(key, tostring(cur), true)
  return integer(cur)
end

def("incr", 2, function(_, a) return incr_by(a[2], 1) end)
def("decr", 2, function(_, a) return incr_by(a[2], -1) end)
def("incrby", 3, function(_, a)
  local by = toint(a[3])
  if not by then return E_INT end
  return incr_by(a[2], by)
end)
def("decrby", 3, function(_, a)
  local by = toint(a[3])
  if not by or by == INT64_MIN then return E_INT end
  return incr_by(a[2], -by)
end)

-- EXPIRE / PEXPIRE key time [NX|XX|GT|LT]
local function expire(scale)
  return function(_, a, n)
    local key, t = a[2], toint(a[3])
    if not t then return E_INT end
    if scale == 1000 and (t > INT64_MAX // 1000 or t < INT64_MIN // 1000) then
      return err("ERR invalid expire time in 'expire' command")
    end
    local flag = n >= 4 and a[4]:upper() or nil
    if n > 4 or (flag and flag ~= "NX" and flag ~= "XX" and flag ~= "GT" and flag ~= "LT") then
      return err("ERR Unsupported option " .. (a[4] or ""))
    end
    if lookup(key) == nil then return ":0\r\n" end
    local cur = S.exp[key]
    local ms = t * scale
    local at = now() + ms
    if flag == "NX" and cur then return ":0\r\n" end
    if flag == "XX" and not cur then return ":0\r\n" end
    if flag == "GT" and (not cur or at <= cur) then return ":0\r\n" end
    if flag == "LT" and cur and at >= cur then return ":0\r\n" end
    if ms <= 0 then delete(key) else S.exp[key] = at end
    return ":1\r\n"
  end
end
def("expire", -3, expire(1000))
def("pexpire", -3, expire(1))

def("persist", 2, function(_, a)
  if lookup(a[2]) == nil or not S.exp[a[2]] then return ":0\r\n" end
  S.exp[a[2]] = nil
  return ":1\r\n"
end)

local function ttl(ms_unit)
  return function(_, a)
    if lookup(a[2]) == nil then return ":-2\r\n" end
    local at = S.exp[a[2]]
    if not at then return ":-1\r\n" end
    local left = at - now()
    if ms_unit then return integer(math.floor(left + 0.5)) end
    return integer(math.floor((left + 500) / 1000))
  end
end
def("ttl", 2, ttl(false))
def("pttl", 2, ttl(true))

def("keys", 2, function(_, a)
  local pat = a[2]
  local all = pat ~= "" and not pat:find("[^*]") -- "*", "**", ...
  local out, c, j = { false }, 0, 1
  local t, exp = now(), S.exp
  for k in pairs(S.db) do
    local e = exp[k]
    if (not e or e > t) and (all or glob_match(pat, k)) then
      c = c + 1
      out[j + 1], out[j + 2], out[j + 3], j = bulk_head(#k), k, "\r\n", j + 3
    end
  end
  out[1] = "*" .. c .. "\r\n"
  return out
end)

def("dbsize", 1, function() return integer(S.n) end)

local function flush(_, a, n)
  if n > 2 or (n == 2 and a[2]:upper() ~= "ASYNC" and a[2]:upper() ~= "SYNC") then
    return E_SYNTAX
  end
  S.db, S.exp, S.n, S.cursor = {}, {}, 0, nil
  return OK
end
def("flushall", -1, flush)
def("flushdb", -1, flush)

def("select", 2, function(_, a)
  local i = toint(a[2])
  if not i then return E_INT end
  if i ~= 0 then return err("ERR DB index is out of range") end
  return OK
end)

-- Enough introspection for clients that ask at start-up.
def("command", -1, function(_, a, n)
  local sub = n >= 2 and a[2]:upper() or nil
  if sub == "COUNT" then
    local c = 0
    for _ in pairs(C) do c = c + 1 end
    return integer(c)
  end
  return "*0\r\n" -- COMMAND, COMMAND DOCS, COMMAND INFO: nothing to tell
end)

def("client", -2, function(conn, a, n)
  local sub = a[2]:upper()
  if sub == "SETNAME" and n == 3 then
    conn.client_name = a[3]
    return OK
  elseif sub == "GETNAME" then return bulk(conn.client_name)
  elseif sub == "ID" then return integer(conn.id)
  elseif sub == "SETINFO" or sub == "NO-EVICT" or sub == "NO-TOUCH" or sub == "REPLY" then
    return OK
  elseif sub == "INFO" then
    return bulk(("id=%d addr=%s name=%s db=0\n"):format(conn.id, conn.peer, conn.client_name or ""))
  end
  return err("ERR unknown subcommand '" .. a[2] .. "'. Try CLIENT HELP.")
end)

local CONFIG = { save = "", appendonly = "no", databases = "1", maxmemory = "0",
                 ["maxmemory-policy"] = "noeviction" }
def("config", -2, function(_, a, n)
  if a[2]:upper() ~= "GET" or n < 3 then
    return err("ERR CONFIG " .. a[2] .. " is not supported")
  end
  CONFIG.maxmemory = tostring(maxmemory())
  local out = {}
  for i = 3, n do
    local pat = a[i]:lower()
    for k, v in pairs(CONFIG) do
      if glob_match(pat, k) then out[#out + 1] = k out[#out + 1] = v end
    end
  end
  return resp.array(out)
end)

-- HELLO: only protocol 2 (clients that ask for 3 fall back)
def("hello", -1, function(_, a, n)
  if n >= 2 and a[2] ~= "2" then
    return err("NOPROTO sorry, this protocol version is not supported")
  end
  return resp.array({ "server", "redis", "version", "7.0.0", "proto", 2,
                      "id", 0, "mode", "standalone", "role", "master", "modules", {} })
end)

def("info", -1, function()
  local st = hs.stats()
  return bulk(table.concat({
    "# Server", "redis_version:7.0.0", "hotsock_generation:" .. st.generation,
    "# Clients", "connected_clients:" .. st.active,
    "# Memory", "used_memory:" .. st.lua_memory, "maxmemory:" .. maxmemory(),
    "maxmemory_policy:noeviction",
    "# Keyspace", "db0:keys=" .. S.n, "",
  }, "\r\n"))
end)

---------------------------------------------------------------------------
-- the connection
---------------------------------------------------------------------------

-- Commands come as sent ("SET", "set", "Set"); the two usual spellings are
-- found without lowering the name for every command. One lookup gives the
-- function, the arity and the name: {fn, arity, name}.
local CMD = {}
for name, f in pairs(C) do
  local c = { f, ARITY[name], name }
  CMD[name], CMD[name:upper()] = c, c
end

local function unknown(argv, n)
  local cmd, args = argv[1], {}
  for i = 2, math.min(n, 8) do args[#args + 1] = "'" .. argv[i]:sub(1, 64):gsub("[\r\n]", " ") .. "'" end
  return err(("ERR unknown command '%s', with args beginning with: %s")
    :format(cmd:sub(1, 128):gsub("[\r\n]", " "), table.concat(args, " ")))
end

return {
  listen = "127.0.0.1:6380",
  -- The host cuts the stream into commands (RESP arrays of bulk strings, or
  -- inline lines) and hands each over as a table of its arguments. Replies
  -- sent while one read is handled go out in one write.
  framing = "resp",
  max_frame = 1024 * 1024, -- one command's bytes; a SET value up to ~1 MiB
  -- Growing a Lua table rehashes all of it at once: with a few hundred
  -- thousand keys one SET can take tens of ms, over the default 100 ms
  -- budget when a garbage collection step comes on top.
  handler_budget = 1000,

  on_message = function(conn, argv)
    local n, cmd = #argv, argv[1]
    local c = CMD[cmd] or CMD[cmd:lower()]
    if not c then return conn:send(unknown(argv, n)) end
    local ar = c[2]
    if (ar > 0 and n ~= ar) or (ar < 0 and n < -ar) then
      return conn:send(err("ERR wrong number of arguments for '" .. c[3] .. "' command"))
    end
    conn:send(c[1](conn, argv, n)) -- all its results, as one write
    if argv.quit then conn:close() end
  end,

  -- Input that is not RESP ("Protocol error: invalid bulk length"), or a
  -- command over max_frame: answer as Redis does; the host then closes.
  on_frame_error = function(conn, why)
    if why == "frame too large" then why = "Protocol error: command over max_frame" end
    conn:send("-ERR " .. why .. "\r\n")
  end,
}
