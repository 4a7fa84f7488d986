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
-- commands costs one read and one write).
-- The data lives in hs.shared, so editing this file while clients are
-- connected keeps both the clients and the keys. Keys with a time to live
-- expire lazily when touched, and a timer sweeps a few of them every 100 ms.
local hs = require "hotsock"
local resp = require "hotsock.resp"

local S = hs.shared.redis
if not S then
  S = { db = {}, exp = {}, n = 0, cursor = nil }
  hs.shared.redis = S
end

local OK, PONG, NULL = "+OK\r\n", "+PONG\r\n", "$-1\r\n"
local bulk, integer, err = resp.bulk, resp.integer, resp.error
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

-- Redis glob (* ? [abc] [^a] [a-z] \x) to an anchored Lua pattern; nil
-- when it can match nothing.
local function lit(c)
  return c:find("^%w$") and c or "%" .. c
end

local function glob_pattern(g)
  local out, i, n = { "^" }, 1, #g
  while i <= n do
    local c = g:sub(i, i)
    if c == "*" then
      if out[#out] ~= ".*" then out[#out + 1] = ".*" end
    elseif c == "?" then
      out[#out + 1] = "."
    elseif c == "\\" and i < n then
      i = i + 1
      out[#out + 1] = lit(g:sub(i, i))
    elseif c == "[" then
      i = i + 1
      local neg = g:sub(i, i) == "^"
      if neg then i = i + 1 end
      local set = {}
      while i <= n and g:sub(i, i) ~= "]" do
        local a = g:sub(i, i)
        if a == "\\" and i < n then
          i = i + 1
          set[#set + 1] = lit(g:sub(i, i))
        elseif g:sub(i + 1, i + 1) == "-" and i + 2 <= n and g:sub(i + 2, i + 2) ~= "]" then
          local lo, hi = a:byte(), g:byte(i + 2)
          if lo > hi then lo, hi = hi, lo end
          for b = lo, hi do set[#set + 1] = lit(string.char(b)) end
          i = i + 2
        else
          set[#set + 1] = lit(a)
        end
        i = i + 1
      end
      if #set == 0 then
        if not neg then return nil end
        out[#out + 1] = "."
      else
        out[#out + 1] = "[" .. (neg and "^" or "") .. table.concat(set) .. "]"
      end
    else
      out[#out + 1] = lit(c)
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

---------------------------------------------------------------------------
-- commands: each gets (conn, argv, n) and returns the reply bytes
---------------------------------------------------------------------------

local C = {}     -- name -> function
local ARITY = {} -- name -> n (exactly n args) or -n (at least n), name included

local function def(name, arity, fn)
  C[name] = fn
  ARITY[name] = arity
end

def("ping", -1, function(_, a, n)
  if n > 2 then return nil end
  if n == 2 then return bulk(a[2]) end
  return PONG
end)

def("echo", 2, function(_, a) return bulk(a[2]) end)

def("quit", -1, function(_, a)
  a.quit = true -- on_message closes the connection after the reply
  return OK
end)

local function set_expiry(key, ms)
  S.exp[key] = now() + ms
end

def("set", -3, function(_, a, n)
  local key, value = a[2], a[3]
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
  local old = lookup(key)
  if (nx and old ~= nil) or (xx and old == nil) then
    return get and bulk(old) or NULL
  end
  store(key, value, keep)
  if ttl then
    if ttl <= 0 then delete(key) else set_expiry(key, ttl) end
  end
  if get then return bulk(old) end
  return OK
end)

def("get", 2, function(_, a) return bulk(lookup(a[2])) end)

def("getset", 3, function(_, a)
  local old = lookup(a[2])
  store(a[2], a[3])
  return bulk(old)
end)

def("setnx", 3, function(_, a)
  if lookup(a[2]) ~= nil then return ":0\r\n" end
  store(a[2], a[3])
  return ":1\r\n"
end)

def("mget", -2, function(_, a, n)
  local out = { "*" .. (n - 1) .. "\r\n" }
  for i = 2, n do out[i] = bulk(lookup(a[i])) end
  return table.concat(out)
end)

def("mset", -3, function(_, a, n)
  if n % 2 == 0 then return err("ERR wrong number of arguments for 'mset' command") end
  for i = 2, n, 2 do store(a[i], a[i + 1]) end
  return OK
end)

def("append", 3, function(_, a)
  local v = (lookup(a[2]) or "") .. a[3]
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
  local pat = glob_pattern(a[2])
  local out, c = { false }, 0
  if pat then
    local t, exp = now(), S.exp
    local all = pat == "^.*$"
    for k in pairs(S.db) do
      local e = exp[k]
      if (not e or e > t) and (all or k:find(pat)) then
        c = c + 1
        out[c + 1] = bulk(k)
      end
    end
  end
  out[1] = "*" .. c .. "\r\n"
  return table.concat(out)
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

local CONFIG = { save = "", appendonly = "no", databases = "1", maxmemory = "0" }
def("config", -2, function(_, a, n)
  if a[2]:upper() ~= "GET" or n < 3 then
    return err("ERR CONFIG " .. a[2] .. " is not supported")
  end
  local out = {}
  for i = 3, n do
    local pat = glob_pattern(a[i]:lower())
    for k, v in pairs(CONFIG) do
      if pat and k:find(pat) then out[#out + 1] = k out[#out + 1] = v end
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
    "# Keyspace", "db0:keys=" .. S.n, "",
  }, "\r\n"))
end)

---------------------------------------------------------------------------
-- the connection
---------------------------------------------------------------------------

-- Commands come as sent ("SET", "set", "Set"); the two usual spellings are
-- found without lowering the name for every command.
local FN, NAME = {}, {}
for name, f in pairs(C) do
  FN[name], FN[name:upper()] = f, f
  NAME[name], NAME[name:upper()] = name, name
end

local function dispatch(conn, argv)
  local n = #argv
  local cmd = argv[1]
  local f = FN[cmd]
  if not f then
    f = FN[cmd:lower()]
    if not f then
      local args = {}
      for i = 2, math.min(n, 8) do args[#args + 1] = "'" .. argv[i]:sub(1, 64):gsub("[\r\n]", " ") .. "'" end
      return err(("ERR unknown command '%s', with args beginning with: %s")
        :format(cmd:sub(1, 128):gsub("[\r\n]", " "), table.concat(args, " ")))
    end
  end
  local name = NAME[cmd] or cmd:lower()
  local ar = ARITY[name]
  if (ar > 0 and n ~= ar) or (ar < 0 and n < -ar) then
    return err("ERR wrong number of arguments for '" .. name .. "' command")
  end
  return f(conn, argv, n) or err("ERR wrong number of arguments for '" .. name .. "' command")
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
    conn:send(dispatch(conn, argv))
    if argv.quit then conn:close() end
  end,

  -- Input that is not RESP ("Protocol error: invalid bulk length"), or a
  -- command over max_frame: answer as Redis does; the host then closes.
  on_frame_error = function(conn, why)
    if why == "frame too large" then why = "Protocol error: command over max_frame" end
    conn:send("-ERR " .. why .. "\r\n")
  end,
}
