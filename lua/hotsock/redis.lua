-- hotsock.redis: a Redis client for hotsock scripts, built on hs.connect
-- (never a blocking socket), so state shared by several hotsock machines
-- can live in a real Redis.
--
-- Coroutine style (inside handle(conn)): calls read straight-line.
--
--   local redis = require "hotsock.redis"
--   local r = assert(redis.connect{ host = "127.0.0.1", port = 6379 })
--   r:set("k", "v", "EX", 10)                --> "OK"
--   local v, err = r:get("k")                --> "v" (nil for a missing key)
--   r:call("HSET", "h", "f", "v")            --> 1
--   local res = r:pipeline(function(p) p:incr("n") p:get("n") end)
--
-- Event style (on_message, timers): connect and every call take a callback
-- as their last argument.
--
--   local r = redis.connect({ port = 6379 }, function(r, err) end)
--   r:get("k", function(v, err) ... end)
--
-- Replies: simple strings and bulk strings are Lua strings, integers Lua
-- integers, a null nil (redis.null inside a list or map), arrays lists, an
-- error reply nil, "ERR ..." (a {err = "..."} object inside a list or a
-- pipeline's results). With protocol = 3 (HELLO 3): maps are tables, sets
-- tables {member = true}, doubles floats, booleans booleans, big numbers
-- decimal strings, verbatim strings their text, push messages go to
-- opts.on_push (or the subscriber), attributes are read and dropped.
--
-- The reply parser (redis.decoder) is pure Lua over a byte buffer fed by
-- "raw" reads: replies may be cut anywhere, and one larger than max_reply
-- is refused. See docs/lua-api.md for the whole contract.

local resp = require "hotsock.resp"

local find, sub, byte, lower, upper = string.find, string.sub, string.byte, string.lower, string.upper
local concat, tostring, tonumber, type, select = table.concat, tostring, tonumber, type, select
local mtype, tointeger, huge = math.type, math.tointeger, math.huge
local setmetatable, getmetatable = setmetatable, getmetatable

-- The host module exists only inside hotsock; the parser works without it.
local hs do
  local ok, m = pcall(require, "hotsock")
  hs = ok and m or nil
end

local M = {}

-- A unique value standing for a null inside a list, a map or a pipeline's
-- results (the same value as resp.null).
M.null = resp.null
local NULL = M.null

-- Error replies inside aggregates and pipeline results: {err = "ERR ..."}.
local ERR = { __name = "hotsock.redis.error" }
ERR.__tostring = function(e) return e.err end
local function mkerr(msg) return setmetatable({ err = msg }, ERR) end
M.is_error = function(v) return type(v) == "table" and getmetatable(v) == ERR end

M.DEFAULTS = {
  host = "127.0.0.1",
  port = 6379,
  timeout = 10000,          -- ms a command may wait for its reply (0: no limit)
  max_reply = 64 * 1024 * 1024, -- bytes in one reply
  backoff = 100,            -- ms before the second connect attempt after a failure
  max_backoff = 10000,      -- cap of the doubling back-off
}

---------------------------------------------------------------------------
-- reply decoder (RESP2 and RESP3)
---------------------------------------------------------------------------

local MAX_DEPTH = 64
local MAX_LINE = 1024 * 1024
-- A bulk string this big or bigger that is not complete yet is gathered in
-- a list of pieces, joined once, instead of being re-concatenated per read.
local GATHER = 16 * 1024

local ARRAY, MAP, SET, PUSH, ATTR = 1, 2, 3, 4, 5
local AGGREGATE = { [42] = ARRAY, [37] = MAP, [126] = SET, [62] = PUSH, [124] = ATTR } -- * % ~ > |

local Decoder = {}
Decoder.__index = Decoder

-- decoder([opts]) -> a reply decoder. opts.max_reply (bytes in one reply,
-- default 64 MiB), opts.max_depth (nesting, default 64).
-- d:feed(bytes); d:next() -> value, is_push | nil (more input needed) |
-- nil, err (the stream is broken: every later call returns the same err).
-- Top-level nulls come back as redis.null, errors as {err = ...} objects.
function M.decoder(opts)
  opts = opts or {}
  local max = opts.max_reply or M.DEFAULTS.max_reply
  return setmetatable({
    buf = "", pos = 1,
    used = 0,           -- bytes of the reply being read consumed before pos
    stack = {}, depth = 0,
    wait = nil, parts = nil, plen = 0,
    max_reply = max,
    max_line = max < MAX_LINE and max or MAX_LINE,
    max_depth = opts.max_depth or MAX_DEPTH,
    err = nil,
  }, Decoder)
end

-- Bytes fed, and bytes fed and not yet part of a returned value: the same
-- buffer as hotsock.resp's request decoder.
Decoder.feed = resp.buffer_feed
Decoder.pending = resp.buffer_pending

local function fail(self, msg)
  self.err = msg
  self.buf, self.pos, self.parts, self.wait = "", 1, nil, nil
  self.stack, self.depth = {}, 0
  return nil, msg
end

local function perr(self, what)
  return fail(self, "protocol error: " .. what)
end

local function too_large(self)
  return fail(self, ("reply too large (max_reply %d bytes)"):format(self.max_reply))
end

-- A length or count: digits with an optional minus, nothing else.
local function parse_len(s)
  if #s > 18 or not find(s, "^%-?%d+$") then return nil end
  return tonumber(s)
end

local function parse_int(s)
  if #s > 20 or not find(s, "^[%-+]?%d+$") then return nil end
  return tointeger(tonumber(s))
end

local function parse_double(s)
  local l = lower(s)
  if l == "inf" or l == "+inf" then return huge end
  if l == "-inf" then return -huge end
  if l == "nan" or l == "-nan" or l == "+nan" then return 0.0 / 0.0 end
  if not find(s, "^[%-+]?%d*%.?%d*[eE]?[%-+]?%d*$") or not find(s, "%d") then return nil end
  local d = tonumber(s)
  return d and d + 0.0
end

function Decoder:next()
  if self.err then return nil, self.err end
  if self.wait then return nil end
  local buf, pos = self.buf, self.pos
  local len = #buf
  local p0 = pos
  local stack, depth = self.stack, self.depth
  local max = self.max_reply
  local want -- bytes needed from pos when a bulk string is incomplete
  while true do
    if pos > len then break end
    local c = byte(buf, pos)
    local e = find(buf, "\r\n", pos + 1, true)
    if not e then
      if len - pos > self.max_line then return perr(self, "line too long") end
      break
    end
    local v, push
    if c == 36 or c == 61 or c == 33 then -- $ bulk, = verbatim, ! blob error
      local line = sub(buf, pos + 1, e - 1)
      local n = parse_len(line)
      if not n then
        if line == "?" then return perr(self, "streamed strings are not supported") end
        return perr(self, "invalid length")
      end
      if n == -1 and c == 36 then
        v = NULL
        pos = e + 2
      elseif n < 0 then
        return perr(self, "invalid length")
      else
        local s = e + 2
        if n > max or self.used + (s - p0) + n + 2 > max then return too_large(self) end
        if len < s + n + 1 then
          want = s + n + 2 - pos
          break
        end
        if byte(buf, s + n) ~= 13 or byte(buf, s + n + 1) ~= 10 then
          return perr(self, "bulk string not terminated by CRLF")
        end
        local str = sub(buf, s, s + n - 1)
        pos = s + n + 2
        if c == 36 then
          v = str
        elseif c == 61 then
          if n < 4 or byte(str, 4) ~= 58 then return perr(self, "verbatim string without a format") end
          v = sub(str, 5)
        else
          v = mkerr(str)
        end
      end
    elseif c == 43 then -- + simple string
      v = sub(buf, pos + 1, e - 1)
      pos = e + 2
    elseif c == 45 then -- - error
      v = mkerr(sub(buf, pos + 1, e - 1))
      pos = e + 2
    elseif c == 58 then -- : integer
      v = parse_int(sub(buf, pos + 1, e - 1))
      if not v then return perr(self, "invalid integer") end
      pos = e + 2
    elseif c == 95 then -- _ null
      if e ~= pos + 1 then return perr(self, "invalid null") end
      v = NULL
      pos = e + 2
    elseif c == 44 then -- , double
      v = parse_double(sub(buf, pos + 1, e - 1))
      if not v then return perr(self, "invalid double") end
      pos = e + 2
    elseif c == 35 then -- # boolean
      local l = sub(buf, pos + 1, e - 1)
      if l == "t" then v = true elseif l == "f" then v = false
      else return perr(self, "invalid boolean") end
      pos = e + 2
    elseif c == 40 then -- ( big number, kept as its decimal text
      v = sub(buf, pos + 1, e - 1)
      if not find(v, "^[%-+]?%d+$") then return perr(self, "invalid big number") end
      pos = e + 2
    elseif AGGREGATE[c] then
      local kind = AGGREGATE[c]
      local line = sub(buf, pos + 1, e - 1)
      local n = parse_len(line)
      if not n then
        if line == "?" then return perr(self, "streamed aggregates are not supported") end
        return perr(self, "invalid count")
      end
      pos = e + 2
      if n == -1 and kind == ARRAY then
        v = NULL
      elseif n < 0 then
        return perr(self, "invalid count")
      else
        -- every element takes at least 3 bytes ("_\r\n")
        local per = (kind == MAP or kind == ATTR) and 6 or 3
        if n > max or self.used + (pos - p0) + n * per > max then return too_large(self) end
        if n == 0 then
          if kind ~= ATTR then
            v = {}
            push = kind == PUSH and depth == 0
          end
        else
          if depth >= self.max_depth then return perr(self, "nesting too deep") end
          depth = depth + 1
          stack[depth] = { kind = kind, t = {}, n = n, i = 0, key = nil, haskey = false }
        end
      end
    else
      return perr(self, ("unexpected type byte 0x%02x"):format(c))
    end
    -- Hand the value up: into the aggregate being read, or out.
    while v ~= nil do
      if depth == 0 then
        self.pos, self.depth, self.used = pos, 0, 0
        return v, push or false
      end
      local f = stack[depth]
      local kind, t = f.kind, f.t
      if kind == ARRAY or kind == PUSH then
        local i = f.i + 1
        t[i] = v
        f.i = i
      elseif kind == SET then
        if v ~= v then v = "nan" end -- NaN cannot be a table key
        t[v] = true
        f.i = f.i + 1
      elseif f.haskey then -- MAP, ATTR
        t[f.key] = v
        f.key, f.haskey = nil, false
        f.i = f.i + 1
      else
        if v ~= v then v = "nan" end
        f.key, f.haskey = v, true
      end
      if f.i < f.n then
        v = nil
      else
        stack[depth] = nil
        depth = depth - 1
        if kind == ATTR then
          v = nil -- attributes are dropped; the value they describe follows
        else
          v = t
          push = kind == PUSH and depth == 0
        end
      end
    end
  end
  -- More input is needed.
  self.used = self.used + (pos - p0)
  self.pos, self.depth = pos, depth
  if self.used + (len - pos + 1) > max then return too_large(self) end
  if want and want >= GATHER then
    local rest = sub(buf, pos)
    self.buf, self.pos = "", 1
    self.parts, self.plen, self.wait = { rest }, #rest, want
  end
  return nil
end

-- parse(s [, opts]) -> a list of the complete values in s (n = how many,
-- rest = bytes left over), or nil, err. For tests and tools.
function M.parse(s, opts)
  local d = M.decoder(opts)
  d:feed(s)
  local out, n = {}, 0
  while true do
    local v, err = d:next()
    if v == nil then
      if err then return nil, err end
      break
    end
    n = n + 1
    out[n] = v
  end
  out.n = n
  out.rest = d:pending()
  return out
end
M._parse = M.parse

---------------------------------------------------------------------------
-- commands on the wire
---------------------------------------------------------------------------

local function arg_text(v, i)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if mtype(v) == "integer" then return tostring(v) end
    local iv = tointeger(v)
    if iv then return tostring(iv) end
    return ("%.17g"):format(v)
  end
  error(("hotsock.redis: argument %d is a %s (strings and numbers only)"):format(i, t), 5)
end

-- Append one command (words, then args[i..j]) to out as a RESP array.
local function encode_into(out, words, nw, args, i, j)
  local o = #out
  o = o + 1
  out[o] = "*" .. (nw + j - i + 1) .. "\r\n"
  for k = 1, nw do
    local a = words[k]
    out[o + 1] = "$" .. #a .. "\r\n"
    out[o + 2] = a
    out[o + 3] = "\r\n"
    o = o + 3
  end
  for k = i, j do
    local a = arg_text(args[k], k - i + 1)
    out[o + 1] = "$" .. #a .. "\r\n"
    out[o + 2] = a
    out[o + 3] = "\r\n"
    o = o + 3
  end
  return out
end

-- Commands that would turn a command connection into something else.
local REFUSED = {
  SUBSCRIBE = "r:subscribe", PSUBSCRIBE = "r:psubscribe", SSUBSCRIBE = false,
  UNSUBSCRIBE = "r:unsubscribe", PUNSUBSCRIBE = "r:punsubscribe", SUNSUBSCRIBE = false,
  MONITOR = false,
}

local function check_command(name)
  local r = REFUSED[name]
  if r ~= nil then
    error(("hotsock.redis: %s is not sent on a command connection%s"):format(name,
      r and (" (use " .. r .. ", which has a connection of its own)") or ""), 4)
  end
end

-- Method name -> the words it sends: get -> {"GET"}, config_get ->
-- {"CONFIG", "GET"} (no Redis command has an underscore in its name).
local WORDS = {}
local function words_of(name)
  local w = WORDS[name]
  if w then return w end
  w = {}
  for part in name:gmatch("[^_]+") do w[#w + 1] = upper(part) end
  if #w == 0 then error("hotsock.redis: no command in method name '" .. name .. "'", 3) end
  check_command(w[1])
  WORDS[name] = w
  return w
end

---------------------------------------------------------------------------
-- the client
---------------------------------------------------------------------------

local CO, EV = "coroutine", "event"

local Client = {}
local ClientMT = { __name = "hotsock.redis.client" }

local function need_hs()
  if not hs then error("hotsock.redis: connections work only inside hotsock scripts", 3) end
end

-- Call a script's callback; an error in it is logged and does not reach
-- the connection (whose other replies are still owed to other callbacks).
local function safe(fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then hs.log.error("hotsock.redis: error in a callback: " .. tostring(err)) end
end

-- Call fn(...) from the loop, never inside the call that asked for it.
local function defer(fn, ...)
  local n, a = select("#", ...), { ... }
  local t = hs.after(0, function() safe(fn, table.unpack(a, 1, n)) end)
  if not t then safe(fn, ...) end -- stopping: no timers any more
end

local function ms_opt(o, name, default)
  local v = o[name]
  if v == nil then return default end
  if type(v) ~= "number" or not (v >= 0) then
    error(("hotsock.redis: %s must be a number of ms >= 0"):format(name), 4)
  end
  return v
end

local function settings(opts)
  if type(opts) ~= "table" then error("hotsock.redis.connect: opts must be a table", 3) end
  local D = M.DEFAULTS
  local port = opts.port or D.port
  if mtype(port) ~= "integer" or port < 1 or port > 65535 then
    error("hotsock.redis: port must be an integer from 1 to 65535", 3)
  end
  local proto = opts.protocol or 2
  if proto ~= 2 and proto ~= 3 then error("hotsock.redis: protocol must be 2 or 3", 3) end
  local db = opts.db or 0
  if mtype(db) ~= "integer" or db < 0 then error("hotsock.redis: db must be an integer >= 0", 3) end
  local s = {
    host = opts.host or D.host,
    port = port,
    username = opts.username,
    password = opts.password,
    db = db,
    name = opts.name,
    protocol = proto,
    tls = opts.tls,
    timeout = ms_opt(opts, "timeout", D.timeout),
    connect_timeout = ms_opt(opts, "connect_timeout", nil),
    max_reply = opts.max_reply or D.max_reply,
    backoff = ms_opt(opts, "backoff", D.backoff),
    max_backoff = ms_opt(opts, "max_backoff", D.max_backoff),
    reconnect = opts.reconnect ~= false,
    on_push = opts.on_push,
  }
  if mtype(s.max_reply) ~= "integer" or s.max_reply < 16 then
    error("hotsock.redis: max_reply must be an integer number of bytes >= 16", 3)
  end
  if not s.connect_timeout then
    s.connect_timeout = s.timeout > 0 and s.timeout or 10000
  end
  if s.connect_timeout <= 0 then s.connect_timeout = 10000 end
  return s
end

local function new_client(s, mode)
  return setmetatable({
    opts = s,
    mode = mode,
    co = mode == CO and coroutine.running() or nil,
    conn = nil,         -- the hotsock connection, while there is one
    dec = nil,          -- its reply decoder
    state = "down",     -- "down", "connecting" (event style), "ready"
    closed = false,     -- r:close() was called
    db = s.db,          -- follows a successful SELECT
    fails = 0,          -- connect attempts failed in a row
    retry_at = 0,       -- no attempt before this (hs.now() ms)
    last_err = nil,     -- why the last attempt failed
    q = { h = 1, t = 0 }, -- event style: requests waiting for replies
    -- subscriber connection (r.sub) only:
    is_sub = false,
    channels = {}, patterns = {}, -- name -> handler (event) or true
    inbox = { h = 1, t = 0 },     -- coroutine style: messages not yet read
    pend = {},                    -- coroutine style: confirmations awaited
  }, ClientMT)
end

-- Encoded handshake for a new connection (AUTH / HELLO 3 / SETNAME /
-- SELECT), and how many replies it brings.
local function handshake(self)
  local o = self.opts
  local out, n = {}, 0
  local function add(...)
    local a = { ... }
    encode_into(out, a, #a, a, 1, 0)
    n = n + 1
  end
  if o.protocol == 3 then
    local h = { "HELLO", "3" }
    if o.password then
      h[#h + 1] = "AUTH"
      h[#h + 1] = o.username or "default"
      h[#h + 1] = tostring(o.password)
    end
    if o.name then
      h[#h + 1] = "SETNAME"
      h[#h + 1] = tostring(o.name)
    end
    add(table.unpack(h))
  else
    if o.password then
      if o.username then add("AUTH", o.username, tostring(o.password))
      else add("AUTH", tostring(o.password)) end
    end
    if o.name then add("CLIENT", "SETNAME", tostring(o.name)) end
  end
  if self.db ~= 0 and not self.is_sub then add("SELECT", tostring(self.db)) end
  return out, n
end

local function connect_failed(self, err)
  self.fails = self.fails + 1
  local o = self.opts
  local delay = o.backoff * 2 ^ (self.fails - 1)
  if delay > o.max_backoff then delay = o.max_backoff end
  self.retry_at = hs.now() + delay
  self.last_err = err
  return nil, err
end

local function qpush(q, e)
  local t = q.t + 1
  q[t] = e
  q.t = t
end

local function qpop(q)
  local h = q.h
  if h > q.t then return nil end
  local e = q[h]
  q[h] = nil
  q.h = h + 1
  return e
end

-- A reply as a single call returns it: value | nil | nil, err.
local function unwrap(v)
  if v == NULL then return nil end
  if getmetatable(v) == ERR then return nil, v.err end
  return v
end

---------------------------------------------------------------------------
-- pub/sub messages (the subscriber connection)
---------------------------------------------------------------------------

local CONFIRM = { subscribe = "channels", psubscribe = "patterns",
                  unsubscribe = "channels", punsubscribe = "patterns" }

-- A value read on the subscriber connection.
function Client:_pubsub(v)
  if getmetatable(v) == ERR then
    self.sub_err = v.err
    if self.mode == EV then
      local seen = {}
      for _, set in ipairs({ self.channels, self.patterns }) do
        for _, fn in pairs(set) do
          if not seen[fn] then seen[fn] = true safe(fn, nil, v.err) end
        end
      end
    end
    return
  end
  if type(v) ~= "table" or type(v[1]) ~= "string" then return end
  local kind = lower(v[1])
  local msg
  if kind == "message" or kind == "smessage" then
    msg = { kind = kind, channel = v[2], payload = v[3] }
  elseif kind == "pmessage" then
    msg = { kind = kind, pattern = v[2], channel = v[3], payload = v[4] }
  elseif CONFIRM[kind] then
    msg = { kind = kind, count = v[3] }
    if CONFIRM[kind] == "patterns" then msg.pattern = v[2] else msg.channel = v[2] end
    local key = kind .. "\0" .. tostring(v[2])
    local p = self.pend[key]
    if p then self.pend[key] = p > 1 and p - 1 or nil end
  else
    return -- "pong" and anything else
  end
  if self.mode == CO then
    if not CONFIRM[kind] then qpush(self.inbox, msg) end
    return
  end
  local fn
  if kind == "pmessage" then fn = self.patterns[msg.pattern]
  elseif kind == "psubscribe" then fn = self.patterns[msg.pattern]
  elseif kind ~= "unsubscribe" and kind ~= "punsubscribe" then fn = self.channels[msg.channel] end
  if type(fn) == "function" then safe(fn, msg) end
end

-- A push message (RESP3) or, on the subscriber, any value.
function Client:_push(v)
  if self.is_sub then return self:_pubsub(v) end
  local fn = self.opts.on_push
  if fn then
    if self.mode == EV then safe(fn, v) else fn(v) end
  end
end

-- The SUBSCRIBE / PSUBSCRIBE commands that restore every subscription.
local function resubscribe(self, out)
  for _, spec in ipairs({ { "SUBSCRIBE", self.channels, "subscribe" },
                          { "PSUBSCRIBE", self.patterns, "psubscribe" } }) do
    local names = {}
    for name in pairs(spec[2]) do
      names[#names + 1] = name
      local key = spec[3] .. "\0" .. name
      self.pend[key] = (self.pend[key] or 0) + 1
    end
    if #names > 0 then
      table.sort(names)
      encode_into(out, { spec[1] }, 1, names, 1, #names)
    end
  end
  return out
end

---------------------------------------------------------------------------
-- coroutine style: the handle coroutine reads its own connection
---------------------------------------------------------------------------

local function co_check(self)
  if coroutine.running() ~= self.co then
    error("hotsock.redis: this client was connected in coroutine style by another coroutine; "
      .. "only that handle coroutine can use it (connect with a callback for a shared client)", 3)
  end
end

-- Drop the connection (after a time-out, a protocol error, a close).
function Client:_co_kill()
  local conn = self.conn
  self.conn, self.dec, self.state = nil, nil, "down"
  if conn and not conn.closed then conn:abort() end
  if self.is_sub then self.pend = {} end
end

-- The next value on the connection: v, is_push | nil, err. deadline: an
-- hs.now() time or nil; at it the read ends with "timeout" and the
-- connection is dropped, unless keep is set (a wait for a message).
function Client:_co_read(deadline, keep)
  local dec, conn = self.dec, self.conn
  while true do
    local v, p = dec:next()
    if v ~= nil then return v, p end
    if p then
      self:_co_kill()
      return nil, p
    end
    -- receive has no time limit of its own, and the read timeout counts
    -- from the last byte read: a timer makes the read time out at the
    -- deadline by lowering it then.
    local timer, fired
    if deadline then
      local left = deadline - hs.now()
      if left <= 0 then
        if keep then return nil, "timeout" end
        self:_co_kill()
        return nil, "timeout"
      end
      timer = hs.after(math.ceil(left), function()
        fired = true
        if not conn.closed then conn:settimeouts{ read = 1 } end
      end)
    end
    local data, err, partial = conn:receive("raw")
    if timer then timer:cancel() end
    if fired and not conn.closed then conn:settimeouts{ read = 0 } end
    if data then
      dec:feed(data)
    else
      if partial and partial ~= "" then dec:feed(partial) end
      if err == "timeout" then
        if not keep then self:_co_kill() end
        return nil, "timeout"
      end
      self:_co_kill()
      return nil, "closed"
    end
  end
end

-- Read n replies (pushes go to _push): a list (n = n) or nil, err.
function Client:_co_replies(n, timeout)
  local deadline = timeout and timeout > 0 and hs.now() + timeout or nil
  local got = { n = n }
  local i = 0
  while i < n do
    local v, p = self:_co_read(deadline)
    if v == nil then return nil, p end
    if p then
      self:_push(v)
    else
      i = i + 1
      got[i] = v
    end
  end
  return got
end

function Client:_co_connect()
  local o = self.opts
  local conn, err = hs.connect(o.host, o.port, { timeout = o.connect_timeout, tls = o.tls,
                                                framing = "raw" })
  if not conn then return connect_failed(self, err) end
  -- timeouts meant for the script's clients do not apply to this one
  conn:settimeouts{ idle = 0, read = 0 }
  self.conn, self.dec = conn, M.decoder(o)
  local out, n = handshake(self)
  if n > 0 then
    if not conn:send(out) then
      self:_co_kill()
      return connect_failed(self, "closed")
    end
    local got, gerr = self:_co_replies(n, o.timeout)
    if not got then return connect_failed(self, gerr) end
    for i = 1, n do
      if getmetatable(got[i]) == ERR then
        self:_co_kill()
        return connect_failed(self, got[i].err)
      end
    end
  end
  self.fails, self.state = 0, "ready"
  if self.is_sub then
    self.pend = {}
    local sub_out = resubscribe(self, {})
    if #sub_out > 0 and not conn:send(sub_out) then
      self:_co_kill()
      return connect_failed(self, "closed")
    end
  end
  return true
end

function Client:_co_ensure()
  if self.closed then return nil, "closed" end
  local conn = self.conn
  if conn then
    if not conn.closed then return true end
    self:_co_kill()
  end
  if self.ever and not self.opts.reconnect then return nil, "closed" end
  if self.fails > 0 and hs.now() < self.retry_at then return nil, self.last_err end
  local ok, err = self:_co_connect()
  if ok then self.ever = true end
  return ok, err
end

-- Send an encoded request and read its n replies: a list or nil, err.
function Client:_co_request(out, n, timeout)
  co_check(self)
  local ok, err = self:_co_ensure()
  if not ok then return nil, err end
  if not self.conn:send(out) then
    -- closed before the request left: nothing was sent, so one new
    -- connection may carry it
    self:_co_kill()
    ok, err = self:_co_ensure()
    if not ok then return nil, err end
    if not self.conn:send(out) then
      self:_co_kill()
      return nil, "closed"
    end
  end
  return self:_co_replies(n, timeout)
end

---------------------------------------------------------------------------
-- event style: replies reach callbacks, in order
---------------------------------------------------------------------------

-- The connection is gone (or given up on): fail what waits on it. err for
-- every request; special (a request) gets serr instead.
function Client:_ev_down(err, special, serr)
  local conn = self.conn
  local was_ready = self.state == "ready"
  self.conn, self.dec, self.state = nil, nil, "down"
  if conn and not conn.closed then
    if self.q.h > self.q.t and err == "closed" then conn:close() else conn:abort() end
  end
  local q = self.q
  self.q = { h = 1, t = 0 }
  if not self.closed then
    if was_ready then
      self.fails = 0
    else
      connect_failed(self, serr or err)
    end
  end
  -- a connect that failed fails what waited for it with its reason
  local first_err = was_ready and err or (serr or err)
  for i = q.h, q.t do
    local e = q[i]
    e.done = true
    if e.timer then e.timer:cancel() end
    if not e.hello then safe(e.finish, nil, (e == special and serr) or first_err) end
  end
  local ready = self.on_ready
  if ready and not was_ready then
    self.on_ready = nil
    safe(ready, nil, first_err)
  end
  if self.is_sub and not self.closed then
    if was_ready then
      local seen = {}
      for _, set in ipairs({ self.channels, self.patterns }) do
        for _, fn in pairs(set) do
          if type(fn) == "function" and not seen[fn] then seen[fn] = true safe(fn, nil, "closed") end
        end
      end
    end
    self:_ev_schedule()
  end
end

-- Subscriber: reconnect on its own (after the back-off) while it has
-- subscriptions.
function Client:_ev_schedule()
  if self.retry_timer or self.closed or self.conn then return end
  if next(self.channels) == nil and next(self.patterns) == nil then return end
  if not self.opts.reconnect then return end
  local delay = self.fails > 0 and (self.retry_at - hs.now()) or 0
  if delay < 0 then delay = 0 end
  self.retry_timer = hs.after(delay, function()
    self.retry_timer = nil
    if not self.conn and not self.closed then self:_ev_start() end
  end)
end

function Client:_ev_ready()
  self.state, self.fails = "ready", 0
  self.ever = true
  local ready = self.on_ready
  if ready then
    self.on_ready = nil
    safe(ready, self.parent or self)
  end
end

function Client:_ev_data(conn, data)
  if conn ~= self.conn then return end
  local dec = self.dec
  dec:feed(data)
  while true do
    local v, p = dec:next()
    if v == nil then
      if p then self:_ev_down(p) end
      return
    end
    local q = self.q
    if p then
      self:_push(v)
    elseif q.h <= q.t then
      local e = q[q.h]
      local k = e.k + 1
      e.k = k
      e.got[k] = v
      if k == e.n then
        qpop(q)
        e.done = true
        if e.timer then e.timer:cancel() end
        if e.hello then
          for i = 1, e.n do
            if getmetatable(e.got[i]) == ERR then
              self:_ev_down(e.got[i].err)
              return
            end
          end
          self:_ev_ready()
        else
          safe(e.finish, e.got)
        end
      end
    elseif self.is_sub then
      self:_pubsub(v)
    else
      self:_ev_down("protocol error: a reply nobody asked for")
      return
    end
    if self.conn ~= conn then return end -- a callback closed the client
  end
end

-- Start a connection: the handshake (and the subscriptions) go out at
-- once, queued until the connect completes. true, or nil, err.
function Client:_ev_start()
  local o = self.opts
  self.state = "connecting"
  local handlers = {
    framing = "raw", timeout = o.connect_timeout, tls = o.tls,
    on_connect = function(c)
      if c == self.conn and self.state == "connecting" and not self.hello_pending then
        self:_ev_ready()
      end
    end,
    on_message = function(c, data) self:_ev_data(c, data) end,
    on_close = function(c, reason)
      if c ~= self.conn then return end
      self:_ev_down(self.state == "ready" and "closed" or reason)
    end,
  }
  -- In a new thread hs.connect never waits, even when called from a handle
  -- coroutine: the connection is event-driven, through the handlers above.
  local conn, err = coroutine.wrap(hs.connect)(o.host, o.port, handlers)
  if not conn then
    self.state = "down"
    connect_failed(self, err)
    if self.on_ready then
      local ready = self.on_ready
      self.on_ready = nil
      defer(ready, nil, err)
    end
    if self.is_sub then self:_ev_schedule() end
    return nil, err
  end
  conn:settimeouts{ idle = 0, read = 0 }
  self.conn, self.dec = conn, M.decoder(o)
  local out, n = handshake(self)
  self.hello_pending = nil
  if n > 0 then
    local e = { n = n, k = 0, got = { n = n }, hello = true }
    if o.timeout > 0 then
      e.timer = hs.after(o.timeout, function()
        if not e.done and self.conn == conn then self:_ev_down("closed", e, "timeout") end
      end)
    end
    qpush(self.q, e)
    self.hello_pending = true -- ready once it is answered, not at on_connect
  end
  if self.is_sub then
    self.pend = {}
    resubscribe(self, out)
  end
  if #out > 0 then conn:send(out) end
  return true
end

function Client:_ev_ensure()
  if self.closed then return nil, "closed" end
  local conn = self.conn
  if conn then
    if not conn.closed then return true end
    local _, why = conn:buffered()
    self:_ev_down(self.state == "ready" and "closed" or (why or "closed"))
  end
  if self.ever and not self.opts.reconnect then return nil, "closed" end
  if self.fails > 0 and hs.now() < self.retry_at then return nil, self.last_err end
  if self.retry_timer then self.retry_timer:cancel() self.retry_timer = nil end
  return self:_ev_start()
end

-- Queue an encoded request; finish(list) or finish(nil, err) later.
function Client:_ev_request(out, n, timeout, finish)
  local ok, err = self:_ev_ensure()
  if not ok then return defer(finish, nil, err) end
  local conn = self.conn
  local e = { n = n, k = 0, got = { n = n }, finish = finish }
  if timeout and timeout > 0 then
    e.timer = hs.after(timeout, function()
      if not e.done and self.conn == conn then self:_ev_down("closed", e, "timeout") end
    end)
  end
  qpush(self.q, e)
  if not conn:send(out) then self:_ev_down("closed") end
end

---------------------------------------------------------------------------
-- the public methods
---------------------------------------------------------------------------

-- Split (...) into the arguments, the callback (event style) and the
-- options table given first to r:call.
local function run_command(self, words, nw, first, ...)
  local n = select("#", ...)
  local args = { ... }
  local cb
  if self.mode == EV then
    cb = args[n]
    if type(cb) ~= "function" then
      error("hotsock.redis: an event-style client takes a callback as the last argument", 3)
    end
    n = n - 1
  elseif n > 0 and type(args[n]) == "function" then
    error("hotsock.redis: a coroutine-style client takes no callback (connect with one for event style)", 3)
  end
  local timeout = self.opts.timeout
  local i = first
  if words == nil then -- r:call([opts,] name, ...)
    if type(args[i]) == "table" then
      local co = args[i]
      if co.timeout ~= nil then
        if type(co.timeout) ~= "number" or co.timeout < 0 then
          error("hotsock.redis: timeout must be a number of ms >= 0", 3)
        end
        timeout = co.timeout
      end
      i = i + 1
    end
    if type(args[i]) ~= "string" then error("hotsock.redis: call needs a command name", 3) end
    local name = upper(args[i])
    check_command(name)
    words, nw = { name }, 1
    i = i + 1
  end
  if self.closed then
    if cb then return defer(cb, nil, "closed") end
    return nil, "closed"
  end
  local out = encode_into({}, words, nw, args, i, n)
  local select_db = words[1] == "SELECT" and nw == 1 and i == n and tointeger(tonumber(args[i]))
  local quit = words[1] == "QUIT" -- Redis closes after its reply
  if self.mode == CO then
    local got, err = self:_co_request(out, 1, timeout)
    if not got then return nil, err end
    local v = got[1]
    if select_db and v == "OK" then self.db = select_db end
    if quit then self:_co_kill() end
    return unwrap(v)
  end
  self:_ev_request(out, 1, timeout, function(got, err)
    if not got then return cb(nil, err) end
    local v = got[1]
    if select_db and v == "OK" then self.db = select_db end
    if quit and self.conn then self:_ev_down("closed") end
    return cb(unwrap(v))
  end)
  return true
end

-- r:call([{timeout = ms},] "CMD", args... [, cb])
function Client:call(...)
  return run_command(self, nil, 0, 1, ...)
end

-- Commands as methods: r:get("k"), r:hset("h", "f", "v"), r:config_get("x").
-- The client's own optional fields are never taken for commands.
local INTERNAL = { co = true, conn = true, dec = true, sub = true, on_ready = true,
  retry_timer = true, sub_err = true, ever = true, parent = true, hello_pending = true,
  last_err = true }
local CMD_FN = {}
ClientMT.__index = function(_, name)
  local m = Client[name]
  if m ~= nil then return m end
  if type(name) ~= "string" or INTERNAL[name] then return nil end
  local f = CMD_FN[name]
  if f then return f end
  local words = words_of(name)
  local nw = #words
  f = function(self, ...)
    return run_command(self, words, nw, 1, ...)
  end
  CMD_FN[name] = f
  return f
end
ClientMT.__tostring = function(self)
  return ("redis client %s:%d (%s, %s)"):format(self.opts.host, self.opts.port, self.mode,
    self.closed and "closed" or self.state)
end

-- The commands a pipeline gathers.
local Pipe = {}
local PipeMT = { __name = "hotsock.redis.pipeline" }
function Pipe:call(name, ...)
  if type(name) ~= "string" then error("hotsock.redis: p:call needs a command name", 2) end
  local w = { upper(name) }
  check_command(w[1])
  local args = { ... }
  encode_into(self.out, w, 1, args, 1, select("#", ...))
  self.n = self.n + 1
  return self
end
local PIPE_FN = {}
PipeMT.__index = function(_, name)
  local m = Pipe[name]
  if m ~= nil then return m end
  if type(name) ~= "string" or name == "out" or name == "n" then return nil end
  local f = PIPE_FN[name]
  if f then return f end
  local words = words_of(name)
  local nw = #words
  f = function(self, ...)
    local args = { ... }
    encode_into(self.out, words, nw, args, 1, select("#", ...))
    self.n = self.n + 1
    return self
  end
  PIPE_FN[name] = f
  return f
end

-- r:pipeline(fn [, opts] [, cb]): fn(p) queues commands on p (p:set(...),
-- p:call(...)); they go out in one write. Returns the list of replies (n =
-- how many; a null is redis.null, an error reply a {err = ...} object),
-- or nil, err when the connection failed (then none can be trusted).
function Client:pipeline(fn, opts, cb)
  if type(opts) == "function" then opts, cb = nil, opts end
  if type(fn) ~= "function" then error("hotsock.redis: pipeline needs a function", 2) end
  if self.mode == EV and type(cb) ~= "function" then
    error("hotsock.redis: an event-style client takes a callback as the last argument", 2)
  elseif self.mode == CO and cb ~= nil then
    error("hotsock.redis: a coroutine-style client takes no callback", 2)
  end
  local timeout = self.opts.timeout
  if opts and opts.timeout ~= nil then timeout = opts.timeout end
  local p = setmetatable({ out = {}, n = 0 }, PipeMT)
  fn(p)
  local n = p.n
  if self.closed then
    if cb then return defer(cb, nil, "closed") end
    return nil, "closed"
  end
  if n == 0 then
    if cb then return defer(cb, { n = 0 }) end
    return { n = 0 }
  end
  if self.mode == CO then return self:_co_request(p.out, n, timeout) end
  self:_ev_request(p.out, n, timeout, cb)
  return true
end

---------------------------------------------------------------------------
-- pub/sub: a connection of its own (r.sub), made on first use
---------------------------------------------------------------------------

function Client:_subscriber()
  local s = self.sub
  if not s then
    s = new_client(self.opts, self.mode)
    s.co = self.co
    s.is_sub = true
    s.parent = self
    self.sub = s
  end
  return s
end

local function sub_names(self, kind, ...)
  local n = select("#", ...)
  local names = { ... }
  local fn
  if self.mode == EV then
    fn = names[n]
    if type(fn) ~= "function" then
      error(("hotsock.redis: an event-style %s takes a message handler as the last argument")
        :format(kind), 3)
    end
    n = n - 1
  elseif n > 0 and type(names[n]) == "function" then
    error("hotsock.redis: in coroutine style read messages with r:next_message(timeout)", 3)
  end
  if n == 0 then error("hotsock.redis: " .. kind .. " needs a channel", 3) end
  for i = 1, n do
    if type(names[i]) ~= "string" then
      error(("hotsock.redis: %s: channel %d is a %s, not a string"):format(kind, i, type(names[i])), 3)
    end
  end
  return names, n, fn
end

local function subscribe(self, cmd, setname, ...)
  local kind = lower(cmd)
  local names, n, fn = sub_names(self, kind, ...)
  if self.closed then return nil, "closed" end
  local s = self:_subscriber()
  local set = s[setname]
  if s.mode == EV then
    local live = s.conn and not s.conn.closed
    for i = 1, n do set[names[i]] = fn end
    if live then
      s.conn:send(encode_into({}, { cmd }, 1, names, 1, n))
      return true
    end
    local ok, err = s:_ev_ensure() -- a new connection subscribes to everything
    if not ok and err ~= nil then
      s:_ev_schedule()
      return nil, err
    end
    return true
  end
  co_check(self)
  local fresh = not (s.conn and not s.conn.closed)
  for i = 1, n do set[names[i]] = true end
  local ok, err = s:_co_ensure() -- a new connection subscribes to everything
  if not ok then return nil, err end
  if not fresh then
    for i = 1, n do
      local key = kind .. "\0" .. names[i]
      s.pend[key] = (s.pend[key] or 0) + 1
    end
    if not s.conn:send(encode_into({}, { cmd }, 1, names, 1, n)) then
      s:_co_kill()
      return nil, "closed"
    end
  end
  return s:_co_confirmed()
end

-- Coroutine style: read until every confirmation awaited has come.
function Client:_co_confirmed()
  local timeout = self.opts.timeout
  local deadline = timeout > 0 and hs.now() + timeout or nil
  self.sub_err = nil
  while next(self.pend) ~= nil do
    local v, err = self:_co_read(deadline)
    if v == nil then return nil, err end
    self:_pubsub(v)
    if self.sub_err then
      local e = self.sub_err
      self.sub_err = nil
      self:_co_kill()
      return nil, e
    end
  end
  return true
end

-- r:subscribe(channel, ... [, handler]) / r:psubscribe(pattern, ... [, handler])
function Client:subscribe(...) return subscribe(self, "SUBSCRIBE", "channels", ...) end
function Client:psubscribe(...) return subscribe(self, "PSUBSCRIBE", "patterns", ...) end

local function unsubscribe(self, cmd, setname, ...)
  local s = self.sub
  if not s then return true end
  if s.mode == CO then co_check(self) end
  local n = select("#", ...)
  local names = { ... }
  local set = s[setname]
  if n == 0 then
    for k in pairs(set) do set[k] = nil end
  else
    for i = 1, n do set[names[i]] = nil end
  end
  local conn = s.conn
  if conn and not conn.closed then
    local ok = conn:send(encode_into({}, { cmd }, 1, names, 1, n))
    if not ok then
      if s.mode == CO then s:_co_kill() else s:_ev_down("closed") end
    end
  end
  return true
end

function Client:unsubscribe(...) return unsubscribe(self, "UNSUBSCRIBE", "channels", ...) end
function Client:punsubscribe(...) return unsubscribe(self, "PUNSUBSCRIBE", "patterns", ...) end

-- Coroutine style: the next message ({kind =, channel =, payload =, and
-- pattern = for a pmessage}), waiting up to timeout ms (nil: no limit);
-- nil, "timeout" leaves the subscriptions in place. nil, "closed" when the
-- connection dropped (messages may have been missed): the next call
-- reconnects and subscribes again.
function Client:next_message(timeout)
  if self.mode ~= CO then
    error("hotsock.redis: next_message is for coroutine style; event style gets messages in the handler", 2)
  end
  co_check(self)
  local s = self.sub
  if not s then return nil, "not subscribed" end
  local msg = qpop(s.inbox)
  if msg then return msg end
  if next(s.channels) == nil and next(s.patterns) == nil then return nil, "not subscribed" end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
    error("hotsock.redis: next_message: timeout must be a number of ms >= 0", 2)
  end
  local deadline = timeout and timeout > 0 and hs.now() + timeout or nil
  if not (s.conn and not s.conn.closed) then
    if s.closed then return nil, "closed" end
    -- reconnecting: wait out the back-off, within the time given (timers
    -- count the loop's whole ms, so the wait may end a little early)
    while s.fails > 0 and hs.now() < s.retry_at do
      if deadline and deadline <= s.retry_at then
        local left = deadline - hs.now()
        if left > 0 then hs.sleep(left) end
        return nil, s.last_err
      end
      local ok, err = hs.sleep(s.retry_at - hs.now() + 1)
      if not ok then return nil, err end
    end
    local ok, err = s:_co_ensure()
    if not ok then return nil, err end
    ok, err = s:_co_confirmed()
    if not ok then return nil, err end
    msg = qpop(s.inbox)
    if msg then return msg end
  end
  while true do
    local v, err = s:_co_read(deadline, true)
    if v == nil then return nil, err end
    s:_pubsub(v)
    msg = qpop(s.inbox)
    if msg then return msg end
  end
end

-- Close the client and its subscriber connection; commands waiting get
-- nil, "closed", and later calls return nil, "closed".
function Client:close()
  if self.closed then return true end
  self.closed = true
  if self.retry_timer then self.retry_timer:cancel() self.retry_timer = nil end
  if self.mode == CO then
    local conn = self.conn
    self.conn, self.dec, self.state = nil, nil, "down"
    if conn and not conn.closed then conn:close() end
  else
    self:_ev_down("closed")
  end
  if self.sub then self.sub:close() end
  return true
end

-- Whether a connection is up now (it may still drop before the next call).
function Client:connected()
  return self.conn ~= nil and not self.conn.closed and self.state == "ready"
end

---------------------------------------------------------------------------
-- connect
---------------------------------------------------------------------------

-- connect(opts) -> client | nil, err   (coroutine style: in handle(conn))
-- connect(opts, cb) -> client          (event style: cb(client) once
--                                       connected, or cb(nil, err))
function M.connect(opts, cb)
  need_hs()
  local s = settings(opts or {})
  if cb ~= nil then
    if type(cb) ~= "function" then error("hotsock.redis.connect: the callback must be a function", 2) end
    local r = new_client(s, EV)
    r.on_ready = cb
    r:_ev_start()
    return r
  end
  if not coroutine.isyieldable() then
    error("hotsock.redis.connect: without a callback it works only inside handle(conn); "
      .. "elsewhere pass a callback: redis.connect(opts, function(r, err) ... end)", 2)
  end
  local r = new_client(s, CO)
  local ok, err = r:_co_connect()
  if not ok then return nil, err end
  r.ever = true
  return r
end

return M
