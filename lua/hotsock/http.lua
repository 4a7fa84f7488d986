-- hotsock.http: HTTP/1.x building blocks in pure Lua.
--
--   local http = require "hotsock.http"
--
-- Requests framed in C (the fast path: framing = "http", docs/protocols.md)
--   http.framing(opts)      -> {http = "request", ...}: the framing spec;
--                              opts.max_head, max_line, max_headers, continue
--   http.refusal_status(why) -> the status to answer a frame error with
--                              (400, 413, 414, 431), from http.refusals
--   The host hands on_message (or conn:receive) one table per request:
--   method, target, path, query, version, major, minor, headers (as
--   below) and body (the whole body, de-chunked; "" for none). With
--   continue = true a head asking for "Expect: 100-continue" comes first
--   alone, with continue = true and no body: answer http.CONTINUE (or
--   refuse); the whole request follows.
--
-- Request heads (the same rules, in Lua)
--   http.parse_request_line(line) -> method, target, major, minor | nil, err
--   http.parse_head(text)         -> req | nil, err     (a whole head, e.g.
--                                     from {delimiter = "\r\n\r\n"} framing)
--   http.head_reader(opts)        -> r; r:line(l) -> req | nil (more) |
--                                     nil, err, status  (line framing)
-- A request is a table: method, target, path, query (nil without "?"),
-- version ("1.1"), major, minor, headers (lower-case name -> value, repeated
-- headers joined with ", "), header_list ({name, value} pairs as sent).
--
-- Bodies
--   http.body_kind(req)     -> "none" | "length", n | "chunked" | nil, err
--   http.keep_alive(req)    -> boolean (HTTP/1.1: unless "Connection: close";
--                              HTTP/1.0: only with "Connection: keep-alive")
--   http.length_body(n, opts), http.chunked_body(opts) -> a body reader:
--     rd:framing()      the framing spec to ask conn:framing for next
--     rd:push(msg)      give it the message that framing produced;
--                       returns a piece of body (maybe "") or nil, err
--     rd.done           true once the body is complete (then go back to
--                       the framing that reads request heads)
--     rd:feed(bytes)    the same reader over a raw byte stream: returns a
--                       list of body pieces, or nil, err; rd.done as above
--                       and rd:rest() the bytes after the body
--   The reader never asks for a frame longer than opts.piece (16 KiB), so a
--   body larger than max_frame still arrives in frames the host accepts.
--   opts.max_body caps the body: over it push/feed return nil, "body too
--   large" (answer 413).
--
-- Responses
--   http.response(status, headers, body, opts) -> string
--   http.head(status, headers, opts)           -> the status line and headers
--   http.chunk(data), http.last_chunk()        -> chunked transfer coding
--   http.reasons[status]                        -> reason phrase

local find, sub, lower, byte, concat = string.find, string.sub, string.lower, string.byte, table.concat
local tonumber, tostring, type, pairs, ipairs = tonumber, tostring, type, pairs, ipairs

local M = {}

M.reasons = {
  [100] = "Continue", [101] = "Switching Protocols",
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [206] = "Partial Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [411] = "Length Required", [413] = "Content Too Large", [414] = "URI Too Long",
  [415] = "Unsupported Media Type", [417] = "Expectation Failed",
  [426] = "Upgrade Required", [429] = "Too Many Requests",
  [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
  [505] = "HTTP Version Not Supported",
}

---------------------------------------------------------------------------
-- request heads
---------------------------------------------------------------------------

-- tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA
local TOKEN = "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$"

-- methods that need no TOKEN check
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, DELETE = true,
                  OPTIONS = true, PATCH = true, CONNECT = true, TRACE = true }

-- parse_request_line(line) -> method, target, major, minor | nil, err
function M.parse_request_line(line)
  if type(line) ~= "string" then return nil, "no request line" end
  if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
  local method, target, major, minor = line:match("^(%S+) (%S+) HTTP/(%d)%.(%d)$")
  if not method then return nil, "malformed request line" end
  if not METHODS[method] and not find(method, TOKEN) then return nil, "malformed method" end
  if find(target, "[%c\127]") then return nil, "malformed request target" end
  if major ~= "1" then return nil, "unsupported HTTP version" end
  return method, target, 1, tonumber(minor)
end

local VERSIONS = {}
for minor = 0, 9 do VERSIONS[minor] = "1." .. minor end

local function new_request(method, target, major, minor)
  local path, query = target, nil
  local q = find(target, "?", 1, true)
  if q then path, query = sub(target, 1, q - 1), sub(target, q + 1) end
  return {
    method = method, target = target,
    path = path, query = query,
    major = major, minor = minor, version = VERSIONS[minor] or major .. "." .. minor,
    headers = {}, header_list = {},
  }
end

-- A bounded cache: key -> value for up to `size` keys (header names seen
-- again and again), so that a client inventing names cannot grow it.
local function cache(size)
  local t, n = {}, 0
  return t, function(k, v)
    if n < size then
      t[k] = v
      n = n + 1
    end
    return v
  end
end

-- valid header name -> its lower-case form
local NAMES, remember_name = cache(1024)

-- add_header(req, line) -> true | nil, err
local function add_header(req, line, max_headers)
  local n = #line
  if byte(line, n) == 13 then n = n - 1 end
  local c = byte(line, 1)
  if c == 32 or c == 9 then return nil, "obsolete header line folding" end
  local colon = find(line, ":", 1, true)
  if not colon or colon > n then return nil, "malformed header line" end
  local name = sub(line, 1, colon - 1)
  local key = NAMES[name]
  if not key then
    if not find(name, TOKEN) then return nil, "malformed header line" end
    key = remember_name(name, lower(name))
  end
  -- optional whitespace around the value
  local vs, ve = colon + 1, n
  c = byte(line, vs)
  while c == 32 or c == 9 do
    vs = vs + 1
    c = byte(line, vs)
  end
  c = byte(line, ve)
  while ve >= vs and (c == 32 or c == 9) do
    ve = ve - 1
    c = byte(line, ve)
  end
  local value = sub(line, vs, ve)
  if find(value, "\r", 1, true) or find(value, "\n", 1, true) or find(value, "\0", 1, true) then
    return nil, "malformed header value"
  end
  local list = req.header_list
  local count = #list
  if count >= max_headers then return nil, "too many headers" end
  list[count + 1] = { name, value }
  local h = req.headers
  local old = h[key]
  if old == nil then h[key] = value
  elseif key == "content-length" and old ~= value then
    return nil, "conflicting Content-Length headers"
  elseif key ~= "content-length" then
    h[key] = old .. ", " .. value
  end
  return true
end

local DEFAULT_MAX_HEADERS = 100
local DEFAULT_MAX_HEAD = 64 * 1024

-- parse_head(text) -> req | nil, err. text: the request line and header
-- lines, separated by CRLF (or LF), with or without the final empty line.
function M.parse_head(text, opts)
  if type(text) ~= "string" then return nil, "no request head" end
  -- leading empty lines before a request line are allowed (RFC 9112 2.2)
  local i = 1
  local c = byte(text, 1)
  while c == 13 or c == 10 do
    local s, e = find(text, "^\r?\n", i)
    if not s then break end
    i = e + 1
    c = byte(text, i)
  end
  local e = find(text, "\n", i, true)
  local first = sub(text, i, (e or #text + 1) - 1)
  local method, target, major, minor = M.parse_request_line(first)
  if not method then return nil, target end
  local req = new_request(method, target, major, minor)
  local max_headers = opts and opts.max_headers or DEFAULT_MAX_HEADERS
  while e do
    local s = e + 1
    e = find(text, "\n", s, true)
    local line = sub(text, s, (e or #text + 1) - 1)
    if line == "" or line == "\r" then
      if e and find(text, "[^\r\n]", e + 1) then
        return nil, "data after the end of the head"
      end
      break
    end
    local ok, err = add_header(req, line, max_headers)
    if not ok then return nil, err end
  end
  return req
end

local HeadReader = {}
HeadReader.__index = HeadReader

-- head_reader([opts]) -> a reader fed one line at a time (line framing).
-- opts.max_headers (100), opts.max_head (bytes of head, 64 KiB),
-- opts.max_request_line (bytes, 8 KiB).
function M.head_reader(opts)
  opts = opts or {}
  return setmetatable({
    max_headers = opts.max_headers or DEFAULT_MAX_HEADERS,
    max_head = opts.max_head or DEFAULT_MAX_HEAD,
    max_request_line = opts.max_request_line or 8192,
    req = nil, size = 0,
  }, HeadReader)
end

-- r:line(l) -> req when the head is complete (the reader is then ready for
-- the next request), nil while more lines are needed, or nil, err, status
-- when the head is malformed or too large (status: 400, 414 for a request
-- line over max_request_line, 431 for a head over max_head or too many
-- headers).
function HeadReader:line(l)
  local req = self.req
  if not req then
    if l == "" or l == "\r" then return nil end -- stray empty lines before a request
    if #l > self.max_request_line then return nil, "request line too long", 414 end
    local method, target, major, minor = M.parse_request_line(l)
    if not method then return nil, target, 400 end
    self.req = new_request(method, target, major, minor)
    self.size = #l
    return nil
  end
  if l == "" or l == "\r" then
    self.req, self.size = nil, 0
    return req
  end
  self.size = self.size + #l + 2
  if self.size > self.max_head then
    self.req = nil
    return nil, "request head too large", 431
  end
  local ok, err = add_header(req, l, self.max_headers)
  if not ok then
    self.req = nil
    return nil, err, err == "too many headers" and 431 or 400
  end
  return nil
end

-- Does a comma-separated header value contain `token` (case-insensitive)?
local function has_token(value, token)
  if not value then return false end
  for t in value:gmatch("[^,]+") do
    if lower(t:match("^[ \t]*(.-)[ \t]*$")) == token then return true end
  end
  return false
end
M.has_token = has_token

-- body_kind(req) -> "none" | "length", n | "chunked" | nil, err
function M.body_kind(req)
  local h = req.headers
  local te, cl = h["transfer-encoding"], h["content-length"]
  if te then
    if cl then return nil, "both Transfer-Encoding and Content-Length" end
    if req.minor == 0 and req.major == 1 then
      return nil, "Transfer-Encoding in an HTTP/1.0 request"
    end
    -- chunked must be the last coding; other codings are not supported
    local codings = {}
    for t in te:gmatch("[^,]+") do codings[#codings + 1] = lower(t:match("^[ \t]*(.-)[ \t]*$")) end
    if #codings == 1 and codings[1] == "chunked" then return "chunked" end
    if codings[#codings] ~= "chunked" then return nil, "bad Transfer-Encoding" end
    return nil, "unsupported Transfer-Encoding"
  end
  if cl then
    if not find(cl, "^%d+$") or #cl > 15 then return nil, "bad Content-Length" end
    local n = tonumber(cl)
    if n == 0 then return "none" end
    return "length", n
  end
  return "none"
end

-- keep_alive(req) -> whether the connection may carry another request
function M.keep_alive(req)
  local c = req.headers.connection
  if req.major == 1 and req.minor >= 1 then
    return not has_token(c, "close")
  end
  return has_token(c, "keep-alive") and not has_token(c, "close")
end

-- Does the client wait for "100 Continue" before it sends the body?
function M.expects_continue(req)
  return req.minor >= 1 and lower(req.headers.expect or "") == "100-continue"
end

M.CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

---------------------------------------------------------------------------
-- requests framed in C
---------------------------------------------------------------------------

-- The refusals of the C framer (frame errors of framing = "http"), the
-- words of the Lua parser above, and the status to answer each with.
M.refusals = {
  ["malformed request line"] = 400, ["malformed method"] = 400,
  ["malformed request target"] = 400, ["unsupported HTTP version"] = 400,
  ["obsolete header line folding"] = 400, ["malformed header line"] = 400,
  ["malformed header value"] = 400, ["conflicting Content-Length headers"] = 400,
  ["both Transfer-Encoding and Content-Length"] = 400,
  ["Transfer-Encoding in an HTTP/1.0 request"] = 400,
  ["bad Transfer-Encoding"] = 400, ["unsupported Transfer-Encoding"] = 400,
  ["bad Content-Length"] = 400, ["malformed chunk size"] = 400,
  ["chunk data not followed by CRLF"] = 400, ["chunk line too long"] = 400,
  ["trailer line too long"] = 400, ["too many trailer lines"] = 400,
  ["too many headers"] = 431, ["request head too large"] = 431,
  ["request line too long"] = 414, ["body too large"] = 413,
}

-- refusal_status(why) -> status for a frame error's reason (400 for any
-- other: "frame too large", "input too large"...)
function M.refusal_status(why)
  return M.refusals[why] or 400
end

-- framing([opts]) -> the framing spec of C-framed requests. opts:
-- max_head (request line and headers, bytes), max_line (the request line),
-- max_headers (header lines, default 100), continue (deliver a head that
-- expects 100-continue first). The body is capped by max_frame.
function M.framing(opts)
  local f = { http = "request" }
  if opts then
    f.max_head, f.max_line, f.max_headers = opts.max_head, opts.max_line, opts.max_headers
    if opts.continue ~= nil then f.continue = opts.continue and true or false end
  end
  return f
end

---------------------------------------------------------------------------
-- body readers
---------------------------------------------------------------------------

local DEFAULT_PIECE = 16 * 1024
local LINE = "line"

local Reader = {}
Reader.__index = Reader

local function new_reader(kind, opts)
  opts = opts or {}
  return setmetatable({
    kind = kind,
    piece = opts.piece or DEFAULT_PIECE,
    max_body = opts.max_body,
    max_line = opts.max_line or 4096,
    total = 0,
    done = false,
    err = nil,
    state = nil, left = 0, -- state: "data", "data+crlf", "crlf", "size", "trailer"
    want = nil,            -- the current framing spec
    buf = "", pos = 1,     -- raw-stream mode (feed)
  }, Reader)
end

local function set_want(self, n)
  if n == nil then self.want = LINE
  elseif type(self.want) == "table" and self.want.exact == n then return
  else self.want = { exact = n } end
end

-- length_body(n [, opts]) -> a reader of exactly n body bytes
function M.length_body(n, opts)
  local r = new_reader("length", opts)
  if r.max_body and n > r.max_body then
    r.err = "body too large"
  end
  r.left = n
  r.state = "data"
  if n == 0 then r.done = true else set_want(r, math.min(n, r.piece)) end
  return r
end

-- chunked_body([opts]) -> a reader of a chunked body (trailers are read
-- and dropped; rd.trailers keeps the lines)
function M.chunked_body(opts)
  local r = new_reader("chunked", opts)
  r.state = "size"
  r.trailers = {}
  set_want(r, nil)
  return r
end

function Reader:framing()
  return self.want
end

local function rfail(self, err)
  self.err = err
  return nil, err
end

-- push(msg) -> body piece (a string, maybe "") | nil, err
function Reader:push(msg)
  if self.err then return nil, self.err end
  if self.done then return rfail(self, "body already complete") end
  local st = self.state
  if st == "data" then
    local n = #msg
    if n > self.left then return rfail(self, "more data than asked for") end
    self.left = self.left - n
    self.total = self.total + n
    if self.max_body and self.total > self.max_body then return rfail(self, "body too large") end
    if self.left == 0 then
      if self.kind == "length" then
        self.done = true
        self.want = LINE
      else
        self.state = "crlf"
        self.want = LINE
      end
    else
      local left = self.left
      if self.kind == "chunked" and left + 2 <= self.piece then
        self.state = "data+crlf"
        set_want(self, left + 2)
      else
        set_want(self, math.min(left, self.piece))
      end
    end
    return msg
  elseif st == "data+crlf" then
    local n = #msg - 2
    if n ~= self.left or sub(msg, -2) ~= "\r\n" then
      return rfail(self, "chunk data not followed by CRLF")
    end
    self.total = self.total + n
    if self.max_body and self.total > self.max_body then return rfail(self, "body too large") end
    self.left = 0
    self.state = "size"
    self.want = LINE
    return sub(msg, 1, n)
  elseif st == "crlf" then
    if msg ~= "" and msg ~= "\r" then return rfail(self, "chunk data not followed by CRLF") end
    self.state = "size"
    self.want = LINE
    return ""
  elseif st == "size" then
    if sub(msg, -1) == "\r" then msg = sub(msg, 1, -2) end
    -- chunk-size [ chunk-ext ]; whitespace before ';' is tolerated
    local hex, rest = msg:match("^(%x+)[ \t]*(.*)$")
    if not hex or (rest ~= "" and byte(rest, 1) ~= 59) then
      return rfail(self, "malformed chunk size")
    end
    hex = hex:match("^0*(.-)$")
    if #hex > 12 then return rfail(self, "body too large") end
    local n = hex == "" and 0 or tonumber(hex, 16)
    if n == 0 then
      self.state = "trailer"
      self.want = LINE
      return ""
    end
    if self.max_body and self.total + n > self.max_body then return rfail(self, "body too large") end
    self.left = n
    if n + 2 <= self.piece then
      self.state = "data+crlf"
      set_want(self, n + 2)
    else
      self.state = "data"
      set_want(self, math.min(n, self.piece))
    end
    return ""
  elseif st == "trailer" then
    if msg == "" or msg == "\r" then
      self.done = true
      self.want = LINE
      return ""
    end
    if #self.trailers >= DEFAULT_MAX_HEADERS then return rfail(self, "too many trailer lines") end
    self.trailers[#self.trailers + 1] = msg
    return ""
  end
  return rfail(self, "bad reader state")
end

-- feed(bytes) -> list of body pieces | nil, err. Drives push() over a raw
-- byte stream; once rd.done, rd:rest() returns what came after the body.
function Reader:feed(data)
  if self.err then return nil, self.err end
  if data and data ~= "" then
    if self.pos > #self.buf then self.buf = data
    else self.buf = sub(self.buf, self.pos) .. data end
    self.pos = 1
  end
  local out = {}
  local buf, pos = self.buf, self.pos
  while not self.done do
    local want, msg = self.want, nil
    if want == LINE then
      local e = find(buf, "\n", pos, true)
      if not e then
        if #buf - pos + 1 > self.max_line then return rfail(self, "line too long") end
        break
      end
      msg = sub(buf, pos, (byte(buf, e - 1) == 13 and e > pos) and e - 2 or e - 1)
      pos = e + 1
    else
      local n = want.exact
      if #buf - pos + 1 < n then
        -- a "data" state takes what there is, so nothing piles up
        if self.state == "data" and #buf >= pos then
          local take = #buf - pos + 1
          msg = sub(buf, pos, pos + take - 1)
          pos = pos + take
        else
          break
        end
      else
        msg = sub(buf, pos, pos + n - 1)
        pos = pos + n
      end
    end
    local piece, err = self:push(msg)
    if not piece then self.buf, self.pos = "", 1 return nil, err end
    if piece ~= "" then out[#out + 1] = piece end
  end
  self.buf, self.pos = buf, pos
  return out
end

function Reader:rest()
  return sub(self.buf, self.pos)
end

---------------------------------------------------------------------------
-- responses
---------------------------------------------------------------------------

local STATUS_LINES = {} -- status -> "HTTP/1.1 200 OK\r\n" for the usual reasons

local function status_line(status, opts)
  local reason = opts and opts.reason
  if not reason then
    local l = STATUS_LINES[status]
    if l then return l end
  end
  local l = "HTTP/1.1 " .. status .. " " .. (reason or M.reasons[status] or "Unknown") .. "\r\n"
  if not reason and M.reasons[status] then STATUS_LINES[status] = l end
  return l
end

local function check_value(v)
  local s = type(v) == "string" and v or tostring(v)
  if find(s, "\r", 1, true) or find(s, "\n", 1, true) then
    error("header text must not contain CR or LF", 4)
  end
  return s
end

-- valid response header name -> its lower-case form
local OUT_NAMES, remember_out_name = cache(1024)

local function check_name(name)
  local key = OUT_NAMES[name]
  if key then return name, key end
  local s = check_value(name)
  return s, remember_out_name(s, lower(s))
end

local SORTED = {} -- scratch: a header map's names in order

-- The status line and header block, with Content-Length `length` (or none).
local function build_head(status, headers, opts, length)
  local out = { status_line(status, opts) }
  local n = 1
  local date, te, cl, conn = false, false, false, false
  if headers then
    local list = headers[1] ~= nil
    local names, k = SORTED, 0
    if list then
      k = #headers
    else
      -- a call that raised half-way (a CR in a value) left names behind
      for i = #names, 1, -1 do names[i] = nil end
      for name in pairs(headers) do
        k = k + 1
        names[k] = name
      end
      if k > 1 then table.sort(names) end
    end
    for i = 1, k do
      local name, v
      if list then
        local h = headers[i]
        name, v = h[1], h[2]
      else
        name = names[i]
        names[i] = nil
        v = headers[name]
      end
      local key
      name, key = check_name(name)
      if type(v) == "table" then
        for j = 1, #v do
          n = n + 1
          out[n] = name .. ": " .. check_value(v[j]) .. "\r\n"
        end
      else
        n = n + 1
        out[n] = name .. ": " .. check_value(v) .. "\r\n"
      end
      if key == "date" then date = true
      elseif key == "transfer-encoding" then te = true
      elseif key == "content-length" then cl = true
      elseif key == "connection" then conn = true end
    end
  end
  if opts then
    if opts.date and not date then
      n = n + 1
      out[n] = "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S GMT") .. "\r\n"
    end
    if opts.chunked then
      if not te then
        n = n + 1
        out[n] = "Transfer-Encoding: chunked\r\n"
      end
      length = nil
    end
  end
  if length and not cl then
    n = n + 1
    out[n] = "Content-Length: " .. check_value(length) .. "\r\n"
  end
  if opts and opts.keep_alive ~= nil and not conn then
    n = n + 1
    out[n] = opts.keep_alive and "Connection: keep-alive\r\n" or "Connection: close\r\n"
  end
  out[n + 1] = "\r\n"
  return concat(out)
end

-- Build the status line and header block. headers: a map {name = value}
-- (a list value repeats the header; names go out sorted) or a list of
-- {name, value} pairs (in that order). opts: reason, keep_alive (adds
-- "Connection: keep-alive" / "close"), length (adds Content-Length), chunked
-- (adds Transfer-Encoding: chunked), date (true: adds a Date header).
function M.head(status, headers, opts)
  return build_head(status, headers, opts, opts and opts.length)
end

-- response(status, headers, body, opts) -> the whole response as a string.
-- Content-Length is the body's length unless headers set it; opts.head
-- (answering HEAD) keeps the length but leaves the body out; 1xx, 204 and
-- 304 get neither. opts as for http.head.
function M.response(status, headers, body, opts)
  body = body or ""
  local bodiless = (status >= 100 and status < 200) or status == 204 or status == 304
  local h = build_head(status, headers, opts, not bodiless and #body or nil)
  if (opts and opts.head) or bodiless then return h end
  return h .. body
end

-- chunk(data) -> one chunk of the chunked transfer coding ("" -> nothing,
-- since an empty chunk would end the body)
function M.chunk(data)
  data = tostring(data)
  if data == "" then return "" end
  return ("%x\r\n"):format(#data) .. data .. "\r\n"
end

function M.last_chunk(trailers)
  if not trailers then return "0\r\n\r\n" end
  local out = { "0\r\n" }
  for k, v in pairs(trailers) do out[#out + 1] = check_value(k) .. ": " .. check_value(v) .. "\r\n" end
  out[#out + 1] = "\r\n"
  return concat(out)
end

-- encode_chunked(body [, size]) -> the whole body in chunks of `size` bytes
function M.encode_chunked(body, size)
  size = size or 8192
  local out = {}
  for i = 1, #body, size do out[#out + 1] = M.chunk(sub(body, i, i + size - 1)) end
  out[#out + 1] = "0\r\n\r\n"
  return concat(out)
end

return M
