-- hotsock.resp: RESP2 (the Redis serialization protocol) in pure Lua.
--
-- Encoders build reply strings:
--
--   local resp = require "hotsock.resp"
--   conn:send(resp.simple("OK"))            --> +OK\r\n
--   conn:send(resp.error("ERR no such key")) --> -ERR no such key\r\n
--   conn:send(resp.integer(42))             --> :42\r\n
--   conn:send(resp.bulk("hi"))              --> $2\r\nhi\r\n   (nil -> $-1\r\n)
--   conn:send(resp.bulk_parts(big))         --> the same as 3 pieces, no copy
--   conn:send(resp.array{"a", 1, {"x"}})    --> nested arrays; see resp.encode
--   conn:send(resp.command("SET", "k", "v"))--> a request (array of bulks)
--
-- A request decoder parses commands out of a byte stream that arrives in
-- pieces of any size (raw framing: one piece per read):
--
--   local d = resp.decoder{ max_args = 1024, max_bulk = 1 << 20 }
--   d:feed(bytes)
--   for argv in d:commands() do ... end     -- argv = {"SET", "k", "v"}
--   if d.err then conn:send(resp.error("ERR " .. d.err)) conn:close() end
--
-- It takes both RESP arrays of bulk strings and inline commands (a line of
-- space-separated words; "double" and 'single' quotes group words, with
-- \n \r \t \b \a \\ \" \xHH escapes inside double quotes). A protocol error
-- (bad length, over a limit, unbalanced quotes) stops the decoder for good:
-- d.err holds the message and further input is ignored, since the stream
-- can no longer be trusted.
--
-- A reply decoder (resp.reply_decoder()) parses any RESP2 value, for
-- clients and tests: simple strings come back as Lua strings, errors as
-- {err = "message"}, integers as integers, null bulks and null arrays as
-- resp.null, arrays as Lua lists.

local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat
local tonumber, tostring, type, mtype = tonumber, tostring, type, math.type
local setmetatable = setmetatable

local M = {}

-- A unique value standing for a RESP null (null bulk or null array).
M.null = setmetatable({}, { __tostring = function() return "resp.null" end,
                            __name = "resp.null" })

---------------------------------------------------------------------------
-- encoders
---------------------------------------------------------------------------

local function check_line(s, what)
  s = tostring(s)
  if find(s, "[\r\n]") then
    error(what .. " must not contain CR or LF", 3)
  end
  return s
end

function M.simple(s) return "+" .. check_line(s, "a simple string") .. "\r\n" end

function M.error(s) return "-" .. check_line(s, "an error") .. "\r\n" end

function M.integer(n)
  local i = mtype(n) == "integer" and n or math.tointeger(n)
  if not i then error("resp.integer needs an integer, got " .. tostring(n), 2) end
  return ":" .. i .. "\r\n"
end

M.NULL_BULK = "$-1\r\n"
M.NULL_ARRAY = "*-1\r\n"
M.OK = "+OK\r\n"
M.PONG = "+PONG\r\n"

-- "$<n>\r\n" for the usual lengths, made once: turning #s into digits
-- costs more than the rest of a short reply.
local BULK_PREFIX = {}
for n = 0, 1024 do BULK_PREFIX[n] = "$" .. n .. "\r\n" end

function M.bulk(s)
  if type(s) ~= "string" then
    if s == nil or s == M.null then return "$-1\r\n" end
    s = tostring(s)
  end
  local n = #s
  return (BULK_PREFIX[n] or "$" .. n .. "\r\n") .. s .. "\r\n"
end

-- bulk_head(n) -> "$<n>\r\n", the header of a bulk string of n bytes.
function M.bulk_head(n)
  return BULK_PREFIX[n] or "$" .. n .. "\r\n"
end

-- bulk_parts(s) -> the bulk string as three strings: header, s, CRLF.
-- conn:send(resp.bulk_parts(s)) writes them as one vector, so unlike
-- bulk(s) a big s is not copied into a new string (nor needs the room for
-- one in the Lua heap). nil and resp.null give the null bulk alone.
function M.bulk_parts(s)
  if type(s) ~= "string" then
    if s == nil or s == M.null then return "$-1\r\n" end
    s = tostring(s)
  end
  local n = #s
  return BULK_PREFIX[n] or "$" .. n .. "\r\n", s, "\r\n"
end

-- encode(value) -> string. Strings become bulk strings, integers (and
-- floats with an integer value) integers, other numbers bulk strings (as
-- Redis sends scores), booleans integers 1/0, nil and resp.null a null
-- bulk. A table with `ok` is a simple string, with `err` an error; any
-- other table is an array of its elements 1..(t.n or #t) (nested freely).
local encode
local function encode_into(out, v, depth)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = "$" .. #v .. "\r\n"
    out[#out + 1] = v
    out[#out + 1] = "\r\n"
  elseif tv == "number" then
    local i = math.tointeger(v)
    if i then out[#out + 1] = ":" .. i .. "\r\n"
    else
      local s = ("%.17g"):format(v)
      out[#out + 1] = "$" .. #s .. "\r\n" .. s .. "\r\n"
    end
  elseif v == nil or v == M.null then
    out[#out + 1] = "$-1\r\n"
  elseif tv == "boolean" then
    out[#out + 1] = v and ":1\r\n" or ":0\r\n"
  elseif tv == "table" then
    if v.ok ~= nil then out[#out + 1] = M.simple(v.ok)
    elseif v.err ~= nil then out[#out + 1] = M.error(v.err)
    else
      if depth > 64 then error("resp.encode: nesting deeper than 64", depth + 2) end
      local n = v.n or #v
      out[#out + 1] = "*" .. n .. "\r\n"
      for i = 1, n do encode_into(out, v[i], depth + 1) end
    end
  else
    error("resp.encode: cannot encode a " .. tv, depth + 2)
  end
end

function encode(v)
  local out = {}
  encode_into(out, v, 1)
  return concat(out)
end
M.encode = encode

-- array(list [, n]) -> a RESP array of the encoded elements (nil -> *-1).
function M.array(t, n)
  if t == nil or t == M.null then return "*-1\r\n" end
  local out = { "*" .. (n or t.n or #t) .. "\r\n" }
  for i = 1, n or t.n or #t do encode_into(out, t[i], 2) end
  return concat(out)
end

-- command(...) -> a request: an array of bulk strings (numbers as text).
function M.command(...)
  local n = select("#", ...)
  local out = { "*" .. n .. "\r\n" }
  for i = 1, n do
    local a = tostring((select(i, ...)))
    out[#out + 1] = "$" .. #a .. "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
  return concat(out)
end

---------------------------------------------------------------------------
-- inline commands
---------------------------------------------------------------------------

local ESC = { n = "\n", r = "\r", t = "\t", b = "\b", a = "\a" }

-- split(line) -> argv, or nil and an error for unbalanced quotes.
local function split_inline(line)
  local argv, n, i, len = {}, 0, 1, #line
  while true do
    i = find(line, "[^ \t\r\n\v\f]", i)
    if not i then return argv end
    local c = byte(line, i)
    if c == 34 or c == 39 then -- " or '
      local parts, j = {}, i + 1
      while true do
        local k = find(line, c == 34 and '["\\]' or "['\\]", j)
        if not k then return nil, "unbalanced quotes in request" end
        parts[#parts + 1] = sub(line, j, k - 1)
        local ck = byte(line, k)
        if ck == c then
          j = k + 1
          break
        end
        -- a backslash
        local e = sub(line, k + 1, k + 1)
        if c == 34 then
          if e == "x" and find(line, "^%x%x", k + 2) then
            parts[#parts + 1] = string.char(tonumber(sub(line, k + 2, k + 3), 16))
            j = k + 4
          elseif e == "" then
            return nil, "unbalanced quotes in request"
          else
            parts[#parts + 1] = ESC[e] or e
            j = k + 2
          end
        else -- single quotes only escape the quote itself
          if e == "'" then parts[#parts + 1] = "'" j = k + 2
          else parts[#parts + 1] = "\\" j = k + 1 end
        end
      end
      -- a closing quote must be followed by a space or the end
      if j <= len and not find(line, "^[ \t\r\n\v\f]", j) then
        return nil, "unbalanced quotes in request"
      end
      n = n + 1
      argv[n] = concat(parts)
      i = j
    else
      local e = find(line, "[ \t\r\n\v\f]", i)
      n = n + 1
      argv[n] = sub(line, i, (e or len + 1) - 1)
      if not e then return argv end
      i = e
    end
  end
end
M.split_inline = split_inline

---------------------------------------------------------------------------
-- request decoder
---------------------------------------------------------------------------

local Decoder = {}
Decoder.__index = Decoder

local DEFAULTS = {
  max_args = 1024 * 1024,        -- elements in one request array
  max_bulk = 512 * 1024 * 1024,  -- bytes in one bulk string
  max_inline = 64 * 1024,        -- bytes in an inline command line / a header line
}

-- A bulk this big or bigger that is not complete yet is gathered in a list
-- of pieces instead of being re-concatenated on every read.
local GATHER = 16 * 1024

-- decoder([opts]) -> a request decoder. opts: max_args, max_bulk,
-- max_inline (see DEFAULTS).
function M.decoder(opts)
  opts = opts or {}
  return setmetatable({
    buf = "", pos = 1,
    max_args = opts.max_args or DEFAULTS.max_args,
    max_bulk = opts.max_bulk or DEFAULTS.max_bulk,
    max_inline = opts.max_inline or DEFAULTS.max_inline,
    argv = nil,   -- the request being read
    nargs = 0,    -- how many elements it has
    need = nil,   -- length of the bulk whose header was read
    wait = nil,   -- bytes to gather before parsing goes on
    parts = nil, plen = 0,
    err = nil,
  }, Decoder)
end

-- feed(bytes): add input. Returns the decoder.
function Decoder:feed(data)
  if self.err or data == nil or data == "" then return self end
  if self.wait then
    local parts = self.parts
    parts[#parts + 1] = data
    self.plen = self.plen + #data
    if self.plen < self.wait then return self end
    self.buf, self.pos = concat(parts), 1
    self.parts, self.plen, self.wait = nil, 0, nil
  elseif self.pos > #self.buf then
    self.buf, self.pos = data, 1
  else
    self.buf, self.pos = sub(self.buf, self.pos) .. data, 1
  end
  return self
end

-- Bytes fed and not yet consumed by a complete request.
function Decoder:pending()
  if self.wait then return self.plen end
  return #self.buf - self.pos + 1
end

-- The input buffer is the same for hotsock.redis's reply decoder, which
-- keeps the same fields (buf, pos, wait, parts, plen, err).
M.buffer_feed, M.buffer_pending = Decoder.feed, Decoder.pending

local function fail(self, msg)
  self.err = "Protocol error: " .. msg
  self.buf, self.pos, self.parts, self.wait, self.argv = "", 1, nil, nil, nil
  return nil, self.err
end

local function parse_count(s)
  -- an optional minus sign and digits, nothing else
  if not find(s, "^%-?%d+$") or #s > 18 then return nil end
  return tonumber(s)
end

-- next() -> argv (a list of strings), or nil when more input is needed, or
-- nil and an error message on a protocol error.
function Decoder:next()
  if self.err then return nil, self.err end
  if self.wait then return nil end
  local buf, pos = self.buf, self.pos
  local len = #buf
  while true do
    local argv = self.argv
    if not argv then
      if pos > len then self.pos = pos return nil end
      if byte(buf, pos) == 42 then -- '*'
        local e = find(buf, "\r\n", pos + 1, true)
        if not e then
          if len - pos > self.max_inline then return fail(self, "too big mbulk count string") end
          self.pos = pos
          return nil
        end
        local n = parse_count(sub(buf, pos + 1, e - 1))
        if not n or n > self.max_args then return fail(self, "invalid multibulk length") end
        pos = e + 2
        if n > 0 then
          argv = {}
          self.argv, self.nargs = argv, n
        end
        -- *0 and *-1 are empty requests: skipped
      else
        local e = find(buf, "\n", pos, true)
        if not e then
          if len - pos + 1 > self.max_inline then return fail(self, "too big inline request") end
          self.pos = pos
          return nil
        end
        if e - pos > self.max_inline then return fail(self, "too big inline request") end
        local line = sub(buf, pos, e - 1)
        pos = e + 1
        local a, err = split_inline(line)
        if not a then self.pos = pos return fail(self, err) end
        if a[1] then
          self.pos = pos
          return a
        end
        -- an empty line: skipped
      end
    end
    if argv then
      local nargs, got = self.nargs, #argv
      while got < nargs do
        local need = self.need
        if not need then
          if pos > len then self.pos = pos return nil end
          local c = byte(buf, pos)
          if c ~= 36 then -- '$'
            return fail(self, ("expected '$', got '%s'"):format(string.char(c)))
          end
          local e = find(buf, "\r\n", pos + 1, true)
          if not e then
            if len - pos > 32 then return fail(self, "invalid bulk length") end
            self.pos = pos
            return nil
          end
          need = parse_count(sub(buf, pos + 1, e - 1))
          if not need or need < 0 or need > self.max_bulk then
            return fail(self, "invalid bulk length")
          end
          pos = e + 2
          self.need = need
        end
        local have = len - pos + 1
        if have < need + 2 then
          self.pos = pos
          if need >= GATHER then
            -- gather the rest in pieces; feed() joins them once complete
            local rest = sub(buf, pos)
            self.buf, self.pos = "", 1
            self.parts, self.plen, self.wait = { rest }, #rest, need + 2
          end
          return nil
        end
        if byte(buf, pos + need) ~= 13 or byte(buf, pos + need + 1) ~= 10 then
          return fail(self, "bulk string not terminated by CRLF")
        end
        got = got + 1
        argv[got] = sub(buf, pos, pos + need - 1)
        pos = pos + need + 2
        self.need = nil
      end
      self.argv, self.pos = nil, pos
      return argv
    end
  end
end

-- commands() -> iterator over complete requests; it stops when more input
-- is needed or on a protocol error (then self.err is set).
function Decoder:commands()
  return self.next, self
end

---------------------------------------------------------------------------
-- reply decoder (any RESP2 value)
---------------------------------------------------------------------------

-- parse(buf, pos, depth, opts) -> value, next_pos | nil (incomplete) | nil, false, err
local function parse_value(buf, pos, depth, opts)
  if pos > #buf then return nil end
  local c = byte(buf, pos)
  local e = find(buf, "\r\n", pos + 1, true)
  if not e then
    if #buf - pos > opts.max_inline then return nil, false, "line too long" end
    return nil
  end
  local line = sub(buf, pos + 1, e - 1)
  local nxt = e + 2
  if c == 43 then return line, nxt                        -- '+'
  elseif c == 45 then return { err = line }, nxt          -- '-'
  elseif c == 58 then                                      -- ':'
    local n = parse_count(line)
    if not n then return nil, false, "invalid integer" end
    return n, nxt
  elseif c == 36 then                                      -- '$'
    local n = parse_count(line)
    if not n or n < -1 or n > opts.max_bulk then return nil, false, "invalid bulk length" end
    if n == -1 then return M.null, nxt end
    if #buf < nxt + n + 1 then return nil end
    if sub(buf, nxt + n, nxt + n + 1) ~= "\r\n" then
      return nil, false, "bulk string not terminated by CRLF"
    end
    return sub(buf, nxt, nxt + n - 1), nxt + n + 2
  elseif c == 42 then                                      -- '*'
    local n = parse_count(line)
    if not n or n < -1 or n > opts.max_args then return nil, false, "invalid multibulk length" end
    if n == -1 then return M.null, nxt end
    if depth >= opts.max_depth then return nil, false, "nesting too deep" end
    local t = {}
    for i = 1, n do
      local v, p, err = parse_value(buf, nxt, depth + 1, opts)
      if v == nil then return nil, p, err end
      t[i] = v
      nxt = p
    end
    return t, nxt
  end
  return nil, false, ("unexpected byte '%s'"):format(string.char(c))
end

local Replies = {}
Replies.__index = Replies

-- reply_decoder([opts]) -> decoder of RESP2 values: feed(bytes), next()
-- -> value | nil (more input needed) | nil, err; values() iterates.
function M.reply_decoder(opts)
  opts = opts or {}
  return setmetatable({
    buf = "", pos = 1, err = nil,
    opts = {
      max_args = opts.max_args or DEFAULTS.max_args,
      max_bulk = opts.max_bulk or DEFAULTS.max_bulk,
      max_inline = opts.max_inline or DEFAULTS.max_inline,
      max_depth = opts.max_depth or 32,
    },
  }, Replies)
end

function Replies:feed(data)
  if self.err or data == nil or data == "" then return self end
  if self.pos > #self.buf then self.buf = data
  else self.buf = sub(self.buf, self.pos) .. data end
  self.pos = 1
  return self
end

function Replies:next()
  if self.err then return nil, self.err end
  local v, p, err = parse_value(self.buf, self.pos, 0, self.opts)
  if v == nil then
    if p == false then
      self.err = "Protocol error: " .. err
      self.buf, self.pos = "", 1
      return nil, self.err
    end
    return nil
  end
  self.pos = p
  return v
end

function Replies:values()
  return self.next, self
end

-- decode(s) -> the first value in s and the position after it, or nil
-- (incomplete), or nil, err.
function M.decode(s, pos)
  local v, p, err = parse_value(s, pos or 1, 0, {
    max_args = DEFAULTS.max_args, max_bulk = DEFAULTS.max_bulk,
    max_inline = DEFAULTS.max_inline, max_depth = 32,
  })
  if v == nil then
    if p == false then return nil, "Protocol error: " .. err end
    return nil
  end
  return v, p
end

function M.is_error(v)
  return type(v) == "table" and v.err ~= nil and v ~= M.null
end

return M
