-- examples/smtp.lua: an SMTP receiver to test mail senders against (a
-- test double for a mail server), coroutine style.
--
-- Try it:
--   hotsock -l 127.0.0.1:2525 examples/smtp.lua
--   swaks --server 127.0.0.1:2525 --from me@example.test --to you@example.test
--   swaks --server 127.0.0.1:2525 --to a@example.test,b@example.test --pipeline
--   printf 'EHLO me\r\nXLIST\r\nXSHOW\r\nQUIT\r\n' | nc 127.0.0.1 2525
-- With STARTTLS (the server's default certificate):
--   hotsock -l 127.0.0.1:2525 --tls-cert cert.pem --tls-key key.pem examples/smtp.lua
--   swaks --server 127.0.0.1:2525 --to you@example.test --tls
--
-- Arguments after the script, all optional:
--   --max-size BYTES  the largest message taken (default 10485760)
--   --max-rcpt N      recipients per message (default 100)
--   --keep N          messages kept in memory (default 100)
--   --hostname NAME   the name in the greeting and in EHLO (default localhost)
--
-- Nothing is delivered anywhere. Each message taken is logged (one info
-- line: its number, sender, recipients and size) and kept in memory, the
-- last --keep of them and at most 64 MiB, in hs.shared (editing this file
-- keeps them). Two extra commands, answered at any time, show them:
--   XLIST      "250-messages kept: N", then a line per message kept, oldest
--              first: "250-<number> <size> <from> <to> [<to>...]" (the
--              last line has "250 " instead of "250-")
--   XSHOW [n]  message n (default: the newest) exactly as it arrived, with
--              the dot-stuffing removed: "250-" and each line of it, then
--              "250 end of message n"; 501 when it is not kept
--
-- Commands: EHLO (250 with PIPELINING, SIZE, 8BITMIME, and STARTTLS when
-- offered), HELO, MAIL FROM:<addr> (SIZE= and BODY= after EHLO), RCPT
-- TO:<addr> (452 past --max-rcpt), DATA (354, then the message up to a
-- line with a lone dot), RSET, NOOP, VRFY (252), HELP, QUIT (221, then the
-- connection closes), STARTTLS. MAIL before HELO/EHLO, RCPT before MAIL,
-- DATA before RCPT, MAIL inside a transaction: 503. Other commands of RFC
-- 5321 and its extensions (EXPN, AUTH, BDAT, ...) get 502, anything else
-- 500. A message over --max-size gets 552, told by SIZE= in MAIL FROM or
-- once its DATA has been read to the end.
--
-- Strict line ends, against SMTP smuggling: the "crlf" framing ends a
-- line only at CRLF, so DATA ends only at CRLF.CRLF. A command with a bare
-- LF or CR in it gets 500; a message with one is read to its end and
-- refused with 554, so a "\n.\n" inside it can neither end it early nor
-- slip a second message in. A command line over 512 bytes (its CRLF
-- included) gets 500; a line over max_frame (64 KiB) gets 500 and ends
-- the session, since where the next line starts is then unknown.
--
-- STARTTLS (RFC 3207) is offered when the server has a default TLS
-- certificate (--tls-cert and --tls-key, or tls = {cert =, key =} in a
-- module): "220 Ready to start TLS", then conn:starttls() upgrades the
-- connection in place; the client says EHLO again. Without a certificate
-- STARTTLS gets 454, on a connection already in TLS 503.
local hs = require "hotsock"

---------------------------------------------------------------------------
-- settings
---------------------------------------------------------------------------

local USAGE = "usage: smtp.lua [--max-size BYTES] [--max-rcpt N] [--keep N] [--hostname NAME]"
local set = { ["--max-size"] = 10485760, ["--max-rcpt"] = 100, ["--keep"] = 100,
              ["--hostname"] = "localhost" }
do
  local args = { ... }
  for i = 1, #args, 2 do
    local name, value = args[i], args[i + 1]
    if set[name] == nil or value == nil then error(USAGE, 0) end
    if name ~= "--hostname" then
      value = math.tointeger(tonumber(value))
      if not value or value < 1 then error(USAGE .. ": " .. name .. " wants a positive integer", 0) end
    elseif not value:find("^[%w.-]+$") then
      error(USAGE .. ": a host name is letters, digits, dots and dashes", 0)
    end
    set[name] = value
  end
end

local MAX_SIZE, MAX_RCPT, KEEP, HOST =
  set["--max-size"], set["--max-rcpt"], set["--keep"], set["--hostname"]
local KEEP_BYTES = 64 * 1024 * 1024 -- all kept messages together
local MAX_COMMAND = 512 - 2         -- a command line, without its CRLF (RFC 5321)

---------------------------------------------------------------------------
-- the messages kept
---------------------------------------------------------------------------

local S = hs.shared.smtp
if not S then
  -- messages: oldest first, each {id =, from =, to = {...}, data =}
  S = { messages = {}, bytes = 0, last_id = 0 }
  hs.shared.smtp = S
end

local function keep(from, to, data)
  S.last_id = S.last_id + 1
  local m = { id = S.last_id, from = from, to = to, data = data }
  local list = S.messages
  list[#list + 1] = m
  S.bytes = S.bytes + #data
  while #list > KEEP or (S.bytes > KEEP_BYTES and #list > 1) do
    S.bytes = S.bytes - #table.remove(list, 1).data
  end
  local rcpts = {}
  for i, a in ipairs(to) do rcpts[i] = "<" .. a .. ">" end
  hs.log.info(("message %d from <%s> to %s, %d bytes"):format(m.id, from,
    table.concat(rcpts, " "), #data))
  return m.id
end

local function kept(id)
  for _, m in ipairs(S.messages) do
    if m.id == id then return m end
  end
end

---------------------------------------------------------------------------
-- the session
---------------------------------------------------------------------------

-- STARTTLS is offered when the server has a default certificate
local function tls_offered()
  return hs.tls_settings ~= nil and hs.tls_settings() ~= nil
end

-- a reply: a string, or a list of lines; each line gets its CRLF
local function reply(conn, r)
  if type(r) == "table" then r = table.concat(r, "\r\n") end
  conn:send(r, "\r\n")
end

local function new_transaction(st) st.from, st.to = nil, nil end

-- Read the message after "354" up to the line with a lone dot. Returns
-- its text (each line with its CRLF, the dot-stuffing removed), or nil and
-- why it is refused ("bare", "size"), or nil, false and receive's error.
local function read_data(conn)
  local lines, n, size, bare = {}, 0, 0, false
  while true do
    local line, err = conn:receive("crlf")
    if not line then return nil, false, err end
    if line == "." then break end
    if line:byte(1) == 46 then line = line:sub(2) end -- ".." -> "."
    if line:find("[\r\n]") then bare = true end
    size = size + #line + 2
    if size > MAX_SIZE then lines = nil end -- read on, keep nothing
    if lines then
      n = n + 1
      lines[n] = line
    end
  end
  if bare then return nil, "bare" end
  if not lines then return nil, "size" end
  if n == 0 then return "" end
  lines[n + 1] = ""
  return table.concat(lines, "\r\n")
end

local NOT_IMPLEMENTED = { EXPN = true, TURN = true, ETRN = true, AUTH = true, BDAT = true,
                          ATRN = true, SEND = true, SOML = true, SAML = true }

-- Each command gets (conn, st, arg) and returns its reply, and true when
-- the session ends after it. st is the session: helo (the client's name,
-- nil before HELO/EHLO), esmtp (EHLO was used), from and to (the
-- transaction under way), tls (STARTTLS was done).
local C = {}

function C.EHLO(conn, st, arg)
  if arg == "" then return "501 Syntax: EHLO hostname" end
  st.helo, st.esmtp = arg, true
  new_transaction(st)
  local ext = { HOST .. " greets " .. arg, "PIPELINING", "SIZE " .. MAX_SIZE, "8BITMIME" }
  if tls_offered() and not conn.tls then ext[#ext + 1] = "STARTTLS" end
  for i = 1, #ext do ext[i] = (i < #ext and "250-" or "250 ") .. ext[i] end
  return ext
end

function C.HELO(_, st, arg)
  if arg == "" then return "501 Syntax: HELO hostname" end
  st.helo, st.esmtp = arg, false
  new_transaction(st)
  return "250 " .. HOST
end

function C.MAIL(_, st, arg)
  if not st.helo then return "503 Send HELO/EHLO first" end
  if st.from then return "503 Nested MAIL command" end
  local addr, params = arg:match("^[Ff][Rr][Oo][Mm]: ?<([^<>%s]*)>(.*)$")
  if not addr or (params ~= "" and not params:find("^ ")) then
    return "501 Syntax: MAIL FROM:<address>"
  end
  for p in params:gmatch("%S+") do
    local key, value = p:upper():match("^([^=]+)=(.*)$")
    if not st.esmtp then return "555 MAIL parameters need EHLO" end
    if key == "SIZE" and value:find("^%d+$") then
      if #value > 15 or tonumber(value) > MAX_SIZE then
        return "552 Message size exceeds fixed maximum message size"
      end
    elseif key ~= "BODY" or (value ~= "7BIT" and value ~= "8BITMIME") then
      return "555 Unsupported parameter " .. p
    end
  end
  st.from, st.to = addr, {}
  return "250 OK"
end

function C.RCPT(_, st, arg)
  if not st.from then return "503 Need MAIL command" end
  local addr, params = arg:match("^[Tt][Oo]: ?<([^<>%s]+)>(.*)$")
  if not addr or (params ~= "" and not params:find("^ ")) then
    return "501 Syntax: RCPT TO:<address>"
  end
  if params:find("%S") then return "555 Unsupported parameter" .. params end
  if #st.to >= MAX_RCPT then return "452 Too many recipients" end
  st.to[#st.to + 1] = addr
  return "250 OK"
end

function C.DATA(conn, st, arg)
  if arg ~= "" then return "501 Syntax: DATA" end
  if not st.from then return "503 Need MAIL command" end
  if #st.to == 0 then return "503 Need RCPT command" end
  reply(conn, "354 End data with <CR><LF>.<CR><LF>")
  local data, why, err = read_data(conn)
  local from, to = st.from, st.to
  new_transaction(st)
  if why == false then return nil, err end -- the session is over
  if why == "bare" then return "554 Message refused: bare CR or LF (lines end with CRLF)" end
  if why == "size" then return "552 Message size exceeds fixed maximum message size" end
  return "250 OK: queued as " .. keep(from, to, data)
end

function C.RSET(_, st, arg)
  if arg ~= "" then return "501 Syntax: RSET" end
  new_transaction(st)
  return "250 OK"
end

function C.NOOP() return "250 OK" end

function C.VRFY(_, _, arg)
  if arg == "" then return "501 Syntax: VRFY address" end
  return "252 Cannot VRFY user, but will accept message and attempt delivery"
end

function C.HELP()
  return "214 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT STARTTLS XLIST XSHOW"
end

function C.QUIT() return "221 Bye", "quit" end

function C.STARTTLS(conn, st, arg)
  if conn.tls or st.tls then return "503 TLS already active" end
  if arg ~= "" then return "501 Syntax: STARTTLS" end
  if not tls_offered() then return "454 TLS not available" end
  if st.from then return "503 MAIL transaction in progress" end
  reply(conn, "220 Ready to start TLS")
  local ok, err = conn:starttls()
  if not ok then
    hs.log.info("STARTTLS failed:", err)
    return nil, "starttls failed"
  end
  -- RFC 3207: start again from EHLO. conn.tls is nil until the handshake
  -- is done; the next command arrives after it.
  st.helo, st.esmtp, st.tls = nil, false, "new"
  new_transaction(st)
end

function C.XLIST()
  local out = { ("250-messages kept: %d"):format(#S.messages) }
  for _, m in ipairs(S.messages) do
    out[#out + 1] = ("250-%d %d <%s> <%s>"):format(m.id, #m.data, m.from, table.concat(m.to, "> <"))
  end
  out[#out] = out[#out]:gsub("^250%-", "250 ")
  return out
end

function C.XSHOW(_, _, arg)
  local id = arg == "" and S.last_id or (arg:find("^%d+$") and math.tointeger(tonumber(arg)))
  local m = id and kept(id)
  if not m then return "501 No such message kept" end
  local out = {}
  for line in m.data:gmatch("(.-)\r\n") do out[#out + 1] = "250-" .. line end
  out[#out + 1] = "250 end of message " .. m.id
  return out
end

-- why receive failed -> the last words, if any
local FAREWELL = {
  ["timeout"] = "421 " .. HOST .. " Timeout, closing connection",
  ["frame too large"] = "500 Line too long",
}

return {
  listen = "127.0.0.1:2525",
  timeouts = { idle = 300000 },   -- RFC 5321's five minutes for a command
  handle = function(conn)
    local st = {}
    reply(conn, "220 " .. HOST .. " ESMTP hotsock")
    while true do
      local line, err = conn:receive("crlf")
      local answer, done
      if line and st.tls == "new" then -- the handshake is over
        st.tls = true
        local t = conn.tls or {}
        hs.log.info("STARTTLS:", t.version, t.cipher)
      end
      if not line then
        answer, done = FAREWELL[err], true
      elseif line:find("[\r\n]") then
        answer = "500 Bare CR or LF in command (lines end with CRLF)"
      elseif #line > MAX_COMMAND then
        answer = "500 Line too long"
      else
        local verb, arg = line:match("^(%S*) ?(.*)$")
        verb = verb:upper()
        local f = C[verb]
        if f then
          answer, done = f(conn, st, arg)
          if done and not answer then answer = FAREWELL[done] end
        elseif NOT_IMPLEMENTED[verb] then
          answer = "502 Command not implemented"
        else
          answer = "500 Command unrecognized"
        end
      end
      if answer then reply(conn, answer) end
      if done then return end -- the connection closes once the answer is sent
    end
  end,
}
