-- examples/memcached.lua: a memcached server (the text protocol), event style.
--
-- Try it:
--   hotsock -l 127.0.0.1:11211 examples/memcached.lua
--   memccp --servers=127.0.0.1:11211 /etc/hostname       # stored as "hostname"
--   memccat --servers=127.0.0.1:11211 hostname
--   memcrm --servers=127.0.0.1:11211 hostname
--   memcslap --servers=127.0.0.1:11211 --execute-number=10000 --concurrency=4
--   printf 'set k 0 60 2\r\nhi\r\nget k\r\nquit\r\n' | nc 127.0.0.1 11211
--
-- Commands: get gets (several keys), set add replace append prepend cas,
-- delete, incr decr (64-bit unsigned, wrapping as memcached does), touch,
-- flush_all [delay], version, verbosity, stats (a few counters), quit;
-- noreply on those that take it. An exptime is seconds from now up to 30
-- days, a unix time above that, and a negative one has already expired.
-- Answers are worded as memcached 1.6 words them.
--
-- A command is a line (memcached ends it at LF and drops a CR before it,
-- which is the "line" framing); a storage command switches the framing to
-- a byte count, bytes + 2, for its data block and CRLF, then back. An item
-- keeps the data block as it came, CRLF included, and the start of its
-- VALUE line, as memcached keeps them: a GET sends both as they are. A value over
-- MAX_VALUE is answered "SERVER_ERROR object too large for cache" and its
-- data block skipped with conn:skip(bytes + 2): never buffered, and the
-- connection goes on with the next command. The items live in hs.shared,
-- so editing this file keeps them; they expire lazily when touched and a
-- timer sweeps a few every second. They are in the Lua heap: near
-- max_lua_memory, stores are refused as memcached -M refuses them
-- ("SERVER_ERROR out of memory storing object") instead of evicting.
local hs = require "hotsock"

local S = hs.shared.memcached
if not S then
  -- db: key -> {data = (the data block, CRLF included), flags = (string),
  -- exp = (unix time or false), cas =, head = (made at the first GET)}
  S = { db = {}, cas = 0, started = os.time(), cursor = nil }
  hs.shared.memcached = S
end
-- A storage command waiting for its data block, by connection: a table of
-- ours rather than a field on the conn, which is a call into the host at
-- each look (weak keys: a connection gone is let go).
S.pending = S.pending or setmetatable({}, { __mode = "k" })

local MAX_VALUE = 1024 * 1024       -- memcached's -I 1m
local MAX_KEY = 250
local RELATIVE = 60 * 60 * 24 * 30  -- exptimes up to 30 days are relative
local VERSION = "1.6.18-hotsock"
local LINE = "line"

local ERROR, STORED, NOT_STORED = "ERROR\r\n", "STORED\r\n", "NOT_STORED\r\n"
local EXISTS, NOT_FOUND, END = "EXISTS\r\n", "NOT_FOUND\r\n", "END\r\n"
local BAD_FORMAT = "CLIENT_ERROR bad command line format\r\n"
local BAD_EXPTIME = "CLIENT_ERROR invalid exptime argument\r\n"
local TOO_LARGE = "SERVER_ERROR object too large for cache\r\n"
local NO_MEMORY = "SERVER_ERROR out of memory storing object\r\n"

local now = os.time

---------------------------------------------------------------------------
-- numbers: memcached's are unsigned 64-bit; Lua's integers are signed, so
-- values of 2^63 and more are held as negative integers and compared with
-- math.ult
---------------------------------------------------------------------------

local U64_TENTH = 0x1999999999999999 -- (2^64 - 1) // 10

-- decimal digits -> integer, or nil when not a number or over 2^64 - 1
local function u64(s)
  if not s or not s:find("^%d+$") then return nil end
  if #s <= 18 then return math.tointeger(tonumber(s)) end -- under 2^63
  local n = 0
  for i = 1, #s do
    local d = s:byte(i) - 48
    if math.ult(U64_TENTH, n) or (n == U64_TENTH and d > 5) then return nil end
    n = n * 10 + d
  end
  return n
end

local function u64_string(n)
  if n >= 0 then return tostring(n) end
  local q = (n >> 1) // 5 -- n // 10, unsigned
  return tostring(q) .. tostring(n - q * 10)
end

-- the flags as memcached echoes them: 32 bits, in canonical digits (the
-- token itself when it is: no new string)
local function flags_string(token, n)
  if n >= 0 and n <= 0xffffffff and (#token == 1 or token:byte() ~= 48) then return token end
  return u64_string(n & 0xffffffff)
end

-- a signed number (exptime, delay), or nil
local function int(s)
  if not s or not s:find("^%-?%d+$") or #s > 18 then return nil end
  return math.tointeger(tonumber(s))
end

-- exptime -> unix time it expires at, or false for never
local function expiry(t)
  if t == 0 then return false end
  if t < 0 then return 0 end -- already expired
  if t <= RELATIVE then return now() + t end
  return t
end

---------------------------------------------------------------------------
-- items
---------------------------------------------------------------------------

-- the live item under key; an expired one is deleted on the way
local function item(key)
  local it = S.db[key]
  if it and it.exp and it.exp <= now() then
    S.db[key] = nil
    return nil
  end
  return it
end

local function next_cas()
  S.cas = S.cas + 1
  return S.cas
end

-- An item: the data block with its CRLF; "VALUE key flags bytes" is made
-- at its first GET and kept.
local function new_item(flags, data, exp)
  return { data = data, flags = flags, exp = exp, cas = next_cas() }
end

local function head(key, it)
  local h = it.head
  if not h then
    h = "VALUE " .. key .. " " .. it.flags .. " " .. (#it.data - 2)
    it.head = h
  end
  return h
end

local function value(it) return it.data:sub(1, -3) end

local function set_value(it, v)
  it.data, it.head, it.cas = v .. "\r\n", nil, next_cas()
end

-- Every second, look at up to 200 items from where the last sweep stopped
-- and delete the expired ones (unread items would otherwise stay forever).
function S.sweep()
  local db, t = S.db, now()
  local k = S.cursor
  if k ~= nil and db[k] == nil then k = nil end -- gone meanwhile: start over
  for _ = 1, 200 do
    local it
    k, it = next(db, k) -- clearing a visited key keeps next() valid
    if k == nil then break end
    if it.exp and it.exp <= t then db[k] = nil end
  end
  if k ~= nil and db[k] == nil then k = next(db, k) end
  S.cursor = k
end
if not S.sweeper then -- one timer for the life of the process
  S.sweeper = hs.every(1000, function() S.sweep() end)
end

-- The data lives in the Lua heap: keep a tenth of max_lua_memory free.
-- Looking at the heap costs more than the rest of a SET's checks, so it is
-- looked at once 64 KiB were stored since the last look (and a value that
-- large looks at once).
local HEAP_CAP = hs.stats().lua_memory_limit * 0.9
local unlooked = 0
local function full(bytes)
  unlooked = unlooked + bytes
  if unlooked < 65536 then return false end
  unlooked = 0
  return collectgarbage("count") * 1024 + bytes > HEAP_CAP
end

---------------------------------------------------------------------------
-- commands: each gets (conn, tokens, n) and returns the answer (a string or
-- a list of strings for one conn:send) and true when the client said
-- "noreply". memcached looks for noreply as the last token.
---------------------------------------------------------------------------

local C = {}

-- get key... / gets key...: VALUE key flags bytes [cas], the data, END
local function get(with_cas)
  return function(_, t, n)
    if n < 2 then return ERROR end
    for i = 2, n do
      if #t[i] > MAX_KEY then return BAD_FORMAT end
    end
    local out = {}
    for i = 2, n do
      local it = item(t[i])
      if it then
        out[#out + 1] = head(t[i], it)
        if with_cas then out[#out + 1] = " " .. it.cas end
        out[#out + 1] = "\r\n"
        out[#out + 1] = it.data -- sent as is, not copied into a new string
      end
    end
    out[#out + 1] = END
    return out
  end
end
C.get, C.gets = get(false), get(true)

-- set/add/replace/append/prepend key flags exptime bytes [noreply]
-- cas key flags exptime bytes cas [noreply]
-- The data block comes next: on_message gets it as the next bytes + 2 bytes.
local function storage(kind)
  local args = kind == "cas" and 6 or 5
  return function(conn, t, n)
    if n < args or n > args + 1 then return ERROR end
    local quiet = t[n] == "noreply"
    local key, flags, exptime, bytes = t[2], u64(t[3]), int(t[4]), u64(t[5])
    local cas = kind == "cas" and u64(t[6])
    if #key > MAX_KEY or not flags or not exptime or not bytes
      or bytes < 0 or bytes > 0x7ffffffd or cas == nil then
      return BAD_FORMAT, quiet -- the data block then reads as commands, as in memcached
    end
    if bytes > MAX_VALUE or full(bytes) then
      if kind == "set" then S.db[key] = nil end -- no stale value left, as memcached
      conn:skip(bytes + 2) -- the data and its CRLF, dropped unread
      return bytes > MAX_VALUE and TOO_LARGE or NO_MEMORY, quiet
    end
    S.pending[conn] = { kind = kind, key = key, flags = flags_string(t[3], flags),
                     exp = expiry(exptime), bytes = bytes, cas = cas, quiet = quiet }
    conn:framing(bytes + 2) -- a byte count: exactly that many (no table to make)
  end
end
for _, kind in ipairs({ "set", "add", "replace", "append", "prepend", "cas" }) do
  C[kind] = storage(kind)
end

-- the data block of a storage command has arrived
-- data: the data block, CRLF included
local function store(p, data)
  local key, kind = p.key, p.kind
  local it = item(key)
  if kind == "add" and it then return NOT_STORED end
  if kind ~= "set" and kind ~= "add" and not it then
    return kind == "cas" and NOT_FOUND or NOT_STORED
  end
  if kind == "cas" and it.cas ~= p.cas then return EXISTS end
  if kind == "append" or kind == "prepend" then -- flags and exptime stay
    if #it.data + #data - 4 > MAX_VALUE then return NOT_STORED end
    local v = data:sub(1, -3)
    set_value(it, kind == "append" and value(it) .. v or v .. value(it))
    return STORED
  end
  S.db[key] = new_item(p.flags, data, p.exp)
  return STORED
end

C.delete = function(_, t, n)
  if n < 2 or n > 4 then return ERROR end
  local quiet = t[n] == "noreply"
  -- "delete key 0" is an old form and still taken
  if (n == 3 and t[3] ~= "0" and not quiet) or (n == 4 and (t[3] ~= "0" or not quiet)) then
    return "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n", quiet
  end
  if #t[2] > MAX_KEY then return BAD_FORMAT, quiet end
  if not item(t[2]) then return NOT_FOUND, quiet end
  S.db[t[2]] = nil
  return "DELETED\r\n", quiet
end

-- incr/decr key delta [noreply]. The value must start with digits (spaces
-- before them, and anything after a space, are allowed). incr wraps at
-- 2^64, decr stops at 0. A shorter result is padded with spaces to the old
-- length, as memcached writes it in place: decr of "100" stores "99 ".
local function delta(sign)
  return function(_, t, n)
    if n < 3 or n > 4 then return ERROR end
    local quiet = t[n] == "noreply"
    if #t[2] > MAX_KEY then return BAD_FORMAT, quiet end
    local d = u64(t[3])
    if not d then return "CLIENT_ERROR invalid numeric delta argument\r\n", quiet end
    local it = item(t[2])
    if not it then return NOT_FOUND, quiet end
    local old = value(it)
    local digits, rest = old:match("^%s*(%d+)(.*)$")
    local v = u64(digits)
    if not v or (rest ~= "" and not rest:find("^%s")) then
      return "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", quiet
    end
    if sign > 0 then v = v + d elseif math.ult(v, d) then v = 0 else v = v - d end
    local s = u64_string(v)
    set_value(it, #s < #old and s .. (" "):rep(#old - #s) or s)
    return s .. "\r\n", quiet
  end
end
C.incr, C.decr = delta(1), delta(-1)

C.touch = function(_, t, n)
  if n < 3 or n > 4 then return ERROR end
  local quiet = t[n] == "noreply"
  if #t[2] > MAX_KEY then return BAD_FORMAT, quiet end
  local exptime = int(t[3])
  if not exptime then return BAD_EXPTIME, quiet end
  local it = item(t[2])
  if not it then return NOT_FOUND, quiet end
  it.exp = expiry(exptime)
  return "TOUCHED\r\n", quiet
end

-- flush_all [delay] [noreply]: everything stored until then goes. As
-- memcached counts it, that is delay - 1 seconds from now: 1 is at once.
C.flush_all = function(_, t, n)
  if n > 3 then return ERROR end
  local quiet = t[n] == "noreply"
  local delay = 0
  if n == 3 or (n == 2 and not quiet) then
    delay = int(t[2])
    if not delay then return BAD_EXPTIME, quiet end
  end
  if delay > 1 then
    hs.after((delay - 1) * 1000, function() S.db, S.cursor = {}, nil end)
  else
    S.db, S.cursor = {}, nil
  end
  return "OK\r\n", quiet
end

C.version = function() return "VERSION " .. VERSION .. "\r\n" end

C.verbosity = function(_, t, n)
  if n < 2 or n > 3 then return ERROR end
  local quiet = t[n] == "noreply"
  if not u64(t[2]) then return BAD_FORMAT, quiet end
  return "OK\r\n", quiet
end

C.stats = function(_, _, n)
  if n > 1 then return ERROR end -- no stats sub-commands
  local st, items, bytes = hs.stats(), 0, 0
  for k, it in pairs(S.db) do
    if not it.exp or it.exp > now() then items, bytes = items + 1, bytes + #k + #it.data - 2 end
  end
  local out = {}
  for _, kv in ipairs({
    { "uptime", now() - S.started }, { "time", now() }, { "version", VERSION },
    { "curr_connections", st.active }, { "total_connections", st.accepted },
    { "curr_items", items }, { "bytes", bytes }, { "limit_maxbytes", st.lua_memory_limit },
  }) do
    out[#out + 1] = ("STAT %s %s\r\n"):format(kv[1], kv[2])
  end
  out[#out + 1] = END
  return out
end

C.quit = function(conn)
  conn:close()
end

return {
  listen = "127.0.0.1:11211",
  framing = LINE,
  max_frame = MAX_VALUE + 2, -- a data block and its CRLF (and so a line)

  on_message = function(conn, msg)
    local p = S.pending[conn]
    if p then -- the data block announced by the last command
      S.pending[conn] = nil
      conn:framing(LINE)
      local answer = "CLIENT_ERROR bad data chunk\r\n"
      local cr, lf = msg:byte(-2, -1)
      if cr == 13 and lf == 10 then answer = store(p, msg) end
      if not p.quiet then conn:send(answer) end
      return
    end
    local t, n = {}, 0
    for word in msg:gmatch("[^ ]+") do -- memcached splits on spaces only
      n = n + 1
      t[n] = word
    end
    local f = C[t[1]]
    if not f then return conn:send(ERROR) end
    local answer, quiet = f(conn, t, n)
    if answer and not quiet then conn:send(answer) end
  end,
}
