-- hotsock.workbench: `hotsock test` (play conversation transcripts against
-- a server) and `hotsock record` (relay clients to a real server and write
-- what each side said as a transcript), plus the pieces hotsock.test shares
-- with them: a server started as a child process and a buffered client.
--
-- The binary runs this file in a plain Lua state of its own (src/workbench.c),
-- never in a server's: the servers it talks to are child processes, started
-- the way spec/helper.lua starts them and always stopped by PID. The file
-- format is documented in docs/testing.md.
--
-- Needs LuaSocket (Debian: lua-socket).

local ok_socket, socket = pcall(require, "socket")
if not ok_socket then
  error("hotsock test/record need LuaSocket (Debian: apt-get install lua-socket): "
    .. tostring(socket), 0)
end
local sys do
  local ok, m = pcall(require, "hotsock.workbench.sys") -- only inside the binary
  sys = ok and m or nil
end

local WB = {}

WB.DEFAULT_TIMEOUT = 2000   -- ms an expectation may wait
WB.START_TIMEOUT = 10       -- s for a server's "listening on" line
WB.SETTLE = 0.05            -- s to look for stray data at the end of a file

---------------------------------------------------------------------------
-- small utilities
---------------------------------------------------------------------------

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
WB.quote = q

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
WB.read_file = read_file

local function write_file(path, data)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(data)
  f:close()
  if not ok then os.remove(tmp) return nil, werr end
  local rok, rerr = os.rename(tmp, path) -- a reader never sees half a file
  if not rok then os.remove(tmp) return nil, rerr end
  return true
end
WB.write_file = write_file

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end
WB.dirname = dirname

local function file_exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end
WB.file_exists = file_exists

local now, sleep = socket.gettime, socket.sleep
WB.now, WB.sleep = now, sleep

-- ^C (or SIGTERM) while the binary runs us: raise, so the caller's cleanup
-- stops the servers it started.
local function check_interrupt()
  if sys then
    local sig = sys.caught()
    if sig then error({ interrupted = sig }, 0) end
  end
end
WB.check_interrupt = check_interrupt

local function mktempdir()
  -- rmtempdir removes only folders with this prefix
  local template = "/tmp/hotsock-wb." .. ("X"):rep(6)
  local f = assert(io.popen("mktemp -d " .. template .. " 2>/dev/null", "r"))
  local d = (f:read("a") or ""):gsub("%s+$", "")
  f:close()
  if d == "" then error("mktemp -d failed", 0) end
  return d
end
WB.mktempdir = mktempdir

local function rmtempdir(d)
  if d and d:match("^/tmp/hotsock%-wb%.[%w]+$") then os.execute("rm -rf " .. q(d)) end
end
WB.rmtempdir = rmtempdir

-- "host:port", "[v6]:port", ":port", "port" -> host, port
local function parse_hostport(s, default_host)
  local h, p = s:match("^%[(.*)%]:(%d+)$")
  if not h then h, p = s:match("^(.*):(%d+)$") end
  if not h then p = s:match("^(%d+)$") h = default_host end
  p = tonumber(p)
  if not p or p > 65535 or not h then return nil end
  if h == "" then h = default_host or "*" end
  return h, p
end
WB.parse_hostport = parse_hostport

---------------------------------------------------------------------------
-- escapes: \r \n \t \\ \xHH
---------------------------------------------------------------------------

local NAMED = { r = "\r", n = "\n", t = "\t", ["\\"] = "\\" }

-- Text of a transcript line -> bytes, or nil, err.
local function unescape(s)
  if not s:find("\\", 1, true) then return s end
  local out, i = {}, 1
  while true do
    local j = s:find("\\", i, true)
    if not j then out[#out + 1] = s:sub(i) break end
    out[#out + 1] = s:sub(i, j - 1)
    local c = s:sub(j + 1, j + 1)
    if NAMED[c] then
      out[#out + 1] = NAMED[c]
      i = j + 2
    elseif c == "x" then
      local hex = s:match("^%x%x", j + 2)
      if not hex then return nil, "\\x needs two hex digits (\\x0A)" end
      out[#out + 1] = string.char(tonumber(hex, 16))
      i = j + 4
    elseif c == "" then
      return nil, "a line cannot end in a lone backslash (write \\\\)"
    else
      return nil, ("unknown escape \\%s (known: \\r \\n \\t \\\\ \\xHH)"):format(c)
    end
  end
  return table.concat(out)
end
WB.unescape = unescape

local ESC = { ["\r"] = "\\r", ["\n"] = "\\n", ["\t"] = "\\t", ["\\"] = "\\\\" }

-- Bytes -> text for a transcript line: control bytes escaped, bytes over
-- 0x7F kept when the whole is valid UTF-8, a trailing space escaped (an
-- editor could strip it).
local function escape(s)
  local utf = utf8.len(s) ~= nil
  local out = s:gsub(utf and "[%c\\\127]" or "[%c\\\127-\255]", function(ch)
    return ESC[ch] or ("\\x%02X"):format(ch:byte())
  end)
  if out:sub(-1) == " " then out = out:sub(1, -2) .. "\\x20" end
  return out
end
WB.escape = escape

---------------------------------------------------------------------------
-- rendering bytes as transcript lines (record, and diffs)
---------------------------------------------------------------------------

-- sig is ">" or "<"; crlf: the file's line end is \r\n. Returns a list of
-- lines: `sig text` for a line with the file's line end, `sig| text` for
-- anything else (no line end, or the other one).
local function render(sig, bytes, crlf)
  local out, pos = {}, 1
  while pos <= #bytes do
    local nl = bytes:find("\n", pos, true)
    local seg = nl and bytes:sub(pos, nl) or bytes:sub(pos)
    pos = pos + #seg
    local body
    if crlf then
      if seg:sub(-2) == "\r\n" then body = seg:sub(1, -3) end
    elseif seg:sub(-1) == "\n" then
      body = seg:sub(1, -2)
    end
    if body and not (sig == "<" and body:match("^closed%s*$")) then
      out[#out + 1] = body == "" and sig or (sig .. " " .. escape(body))
    else
      out[#out + 1] = sig .. "| " .. escape(seg)
    end
  end
  return out
end
WB.render = render

-- A Lua pattern matched against a whole line: ^ and $ added unless there.
local function anchored(pat)
  if pat:sub(1, 1) ~= "^" then pat = "^" .. pat end
  local pcts = #(pat:match("(%%*)%$$") or "")
  if pat:sub(-1) ~= "$" or pcts % 2 == 1 then pat = pat .. "$" end
  return pat
end
WB.anchored = anchored

-- Does `line` match `pat` as a whole? Returns the captures (or the line).
function WB.match_line(line, pat)
  return line:match(anchored(pat))
end

---------------------------------------------------------------------------
-- child processes (servers): started in the background through sh, PID and
-- exit code in files, stopped by PID (SIGTERM, then SIGKILL)
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

local live = {} -- every proc not yet stopped

-- Last resort when the Lua state closes with children still running (a
-- spec run that never called stop): kill them, by PID.
WB._sentinel = setmetatable({}, { __gc = function()
  for p in pairs(live) do
    if p.pid and p:exit_code() == nil then
      os.execute(("kill -KILL %d 2>/dev/null"):format(p.pid))
    end
  end
end })

-- spawn(argv [, opts]) -> proc. argv: a list of words, run with exec.
-- opts.env: {NAME = value}; opts.dir: a folder for its files (else a
-- fresh temp folder, removed by stop()).
function WB.spawn(argv, opts)
  opts = opts or {}
  local dir, own = opts.dir, false
  if not dir then dir, own = mktempdir(), true end
  local p = setmetatable({
    argv = argv, dir = dir, own_dir = own,
    errfile = dir .. "/stderr", outfile = dir .. "/stdout",
    pidfile = dir .. "/pid", rcfile = dir .. "/rc",
  }, Proc)
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. q(v) .. " " end
  local inner = ("%sexec %s 2>%s >%s </dev/null"):format(env, table.concat(words, " "),
    q(p.errfile), q(p.outfile))
  -- the subshell runs the program in the background so that $! is its own
  -- pid, waits for it and writes its exit code
  local wrapper = ("( %s ) & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s")
    :format(inner, q(p.pidfile), q(p.pidfile), q(p.pidfile), q(p.rcfile), q(p.rcfile), q(p.rcfile))
  os.execute("sh -c " .. q(wrapper) .. " >/dev/null 2>&1 </dev/null &")
  local deadline = now() + 5
  repeat
    local s = read_file(p.pidfile)
    p.pid = s and tonumber(s:match("%d+"))
    if not p.pid then sleep(0.005) end
  until p.pid or now() > deadline
  if not p.pid then
    if own then rmtempdir(dir) end
    error("could not start " .. tostring(argv[1]) .. " (no pid within 5 s)", 0)
  end
  live[p] = true
  return p
end

function Proc:stderr() return read_file(self.errfile) or "" end
function Proc:stdout() return read_file(self.outfile) or "" end

function Proc:exit_code()
  if self.rc == nil then
    local s = read_file(self.rcfile)
    self.rc = s and tonumber(s:match("%d+"))
  end
  return self.rc
end

-- Wait up to t s for the exit; the exit code (128+N for signal N) or nil.
function Proc:wait_exit(t)
  local deadline = now() + (t or 5)
  while true do
    local rc = self:exit_code()
    if rc or now() >= deadline then return rc end
    sleep(0.01)
  end
end

-- Send a signal by PID, unless the process is known to have exited (its
-- PID could belong to someone else by now).
function Proc:signal(name)
  if self:exit_code() ~= nil or not self.pid or self.pid <= 1 then return false end
  os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid))
  return true
end

-- SIGTERM; after `t` s (default 8) SIGKILL. Returns the exit code and
-- whether it had to be killed. Removes its temp folder (read stderr first
-- or pass keep = true).
function Proc:stop(t, keep)
  local killed = false
  if not self.stopped then
    self.stopped = true
    live[self] = nil
    if self:exit_code() == nil then
      self:signal("TERM")
      if not self:wait_exit(t or 8) then
        killed = true
        self:signal("KILL")
        self:wait_exit(3)
      end
    end
    self.final_stderr = self:stderr()
    self.killed = killed
  end
  if not keep and self.own_dir then rmtempdir(self.dir) self.own_dir = false end
  return self:exit_code(), self.killed
end

-- Stop every child not stopped yet (after an error or ^C).
function WB.stop_all()
  local list = {}
  for p in pairs(live) do list[#list + 1] = p end
  for _, p in ipairs(list) do pcall(p.stop, p, 3) end
end

local SANITIZER = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
  "WARNING: ThreadSanitizer" }

-- The sanitizer report in `text`, or nil.
function WB.sanitizer_report(text)
  for _, m in ipairs(SANITIZER) do
    local i = text:find(m, 1, true)
    if i then return text:sub(math.max(1, i - 200), i + 3000) end
  end
  return nil
end

-- start_server{bin=, script=, listen=, options={...}, args={...}, env=,
-- timeout=s} -> proc with .addrs, .host, .port, or nil, err (with the
-- stderr tail). The listen address defaults to 127.0.0.1:0 (a free port,
-- read from the "listening on" line).
function WB.start_server(o)
  local argv = { o.bin }
  local listen = o.listen == nil and { "127.0.0.1:0" } or o.listen
  if type(listen) == "string" then listen = { listen } end
  for _, l in ipairs(listen or {}) do argv[#argv + 1] = "-l" argv[#argv + 1] = l end
  for _, a in ipairs(o.options or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = o.script
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
  local p = WB.spawn(argv, { env = o.env, dir = o.dir })
  local deadline = now() + (o.timeout or WB.START_TIMEOUT)
  while true do
    local text = p:stderr()
    local addrs = {}
    -- [^%s"]: with --log-format json the address is followed by '"}'
    for a in text:gmatch('listening on ([^%s"]+)') do addrs[#addrs + 1] = a end
    if #addrs >= math.max(1, #(listen or {})) then p.addrs = addrs break end
    local rc = p:exit_code()
    if rc or now() >= deadline then
      p:stop(1, true)
      local err = p.final_stderr
      if p.own_dir then rmtempdir(p.dir) p.own_dir = false end
      return nil, (rc and ("the server exited with code %d before listening"):format(rc)
        or ("no 'listening on' line within %g s"):format(o.timeout or WB.START_TIMEOUT)), err
    end
    check_interrupt()
    sleep(0.01)
  end
  for _, a in ipairs(p.addrs) do
    local h, port = parse_hostport(a)
    if h and port then
      if h == "*" or h == "0.0.0.0" then h = "127.0.0.1" elseif h == "::" then h = "::1" end
      p.host, p.port = h, port
      break
    end
  end
  return p
end

---------------------------------------------------------------------------
-- clients: a LuaSocket TCP socket with a byte buffer of our own, so reads
-- can cut any framing and several clients can be waited on with one
-- socket.select
---------------------------------------------------------------------------

local Client = {}
Client.__index = Client
WB.Client = Client

-- connect(host, port [, timeout_s]) -> client, or nil, err
function WB.connect(host, port, timeout)
  local s, err = (host:find(":", 1, true) and socket.tcp6 or socket.tcp)()
  if not s then return nil, err end
  s:settimeout(timeout or 3)
  local ok, cerr = s:connect(host, port)
  if not ok then s:close() return nil, cerr end
  s:setoption("tcp-nodelay", true)
  s:settimeout(0)
  return setmetatable({ sock = s, buf = "", eof = false, err = nil, closed = false,
    timeout = timeout or 3 }, Client)
end

-- Read what the socket has now into the buffer (never waits).
function Client:drain()
  if self.eof or self.closed then return end
  while true do
    local data, err, partial = self.sock:receive(65536)
    local got = data or partial
    if got and got ~= "" then self.buf = self.buf .. got end
    if not data then
      if err ~= "timeout" then
        self.eof = true
        if err ~= "closed" then self.err = err end -- "connection reset by peer"
      end
      return
    end
  end
end

-- pump(clients, wait_s): wait up to wait_s (at most 0.1 s per call, so ^C
-- is seen) for any of the clients to become readable, then read what each
-- has. Returns true when some client got data or its end.
function WB.pump(clients, wait)
  check_interrupt()
  local socks, by = {}, {}
  for _, c in ipairs(clients) do
    if not c.eof and not c.closed then
      socks[#socks + 1] = c.sock
      by[c.sock] = c
    end
  end
  if #socks == 0 then
    if wait and wait > 0 then sleep(math.min(wait, 0.1)) end
    return false
  end
  local r = socket.select(socks, nil, math.max(0, math.min(wait or 0, 0.1)))
  local any = false
  for _, s in ipairs(r or {}) do
    local c = by[s]
    if c then
      local before, eof = #c.buf, c.eof
      c:drain()
      if #c.buf ~= before or c.eof ~= eof then any = true end
    end
  end
  return any
end

-- wait(pred, deadline [, others]): pump until pred(self) returns non-nil,
-- the peer closes, or the deadline (a socket.gettime() value) passes.
-- Other clients are pumped too, so no kernel buffer backs up meanwhile.
-- Returns pred's value, or nil, "closed" | "timeout".
function Client:wait(pred, deadline, others)
  local set = { self }
  for _, c in ipairs(others or {}) do if c ~= self then set[#set + 1] = c end end
  while true do
    local v = pred(self)
    if v ~= nil then return v end
    if self.eof or self.closed then return nil, self.err or "closed" end
    local left = deadline - now()
    if left <= 0 then return nil, "timeout" end
    WB.pump(set, left)
  end
end

-- Take the first n bytes of the buffer.
function Client:take(n)
  local s = self.buf:sub(1, n)
  self.buf = self.buf:sub(n + 1)
  return s
end

-- send(...): the strings as one write. Returns true, or nil, err.
function Client:send(...)
  if self.closed then return nil, "closed" end
  local data = table.concat({ ... })
  local i, deadline = 1, now() + self.timeout
  while i <= #data do
    local sent, err, last = self.sock:send(data, i)
    if sent then break end
    if err ~= "timeout" then return nil, err end
    i = last + 1
    if now() > deadline then return nil, "timeout" end
    socket.select(nil, { self.sock }, 0.05)
    check_interrupt()
  end
  return true
end

local function find_nth(s, ch, n)
  local pos = 0
  for _ = 1, n do
    pos = s:find(ch, pos + 1, true)
    if not pos then return nil end
  end
  return pos
end

-- How many bytes of buf to compare with the expected bytes e: as many
-- lines as e has, and for an e without a final line end, #e bytes or up to
-- the next line end, whichever comes first. nil: not enough yet.
local function cut_for(buf, e)
  local k = select(2, e:gsub("\n", ""))
  if e:sub(-1) == "\n" then
    local p = find_nth(buf, "\n", k)
    if p then return p end
    if #buf >= #e + 65536 then return #buf end -- a line far too long: show it
    return nil
  end
  local p = find_nth(buf, "\n", k + 1)
  if p and p < #e then return p end
  if #buf >= #e then return #e end
  return nil
end
WB.cut_for = cut_for

-- A line from the buffer, its LF kept (nil while none is complete).
local function cut_line(buf)
  local p = buf:find("\n", 1, true)
  if p then return p end
  if #buf > 1048576 then return #buf end
  return nil
end

-- receive(pattern [, timeout_s]) for tests: "*l" (a line without LF and a
-- CR before it), "*L" (with them), n (exactly n bytes), "*a" (until the
-- peer closes), {delimiter = "..."} (up to it, not included), "resp" (one
-- RESP2 value, decoded by hotsock.resp). Returns the message, or nil, err,
-- partial with err "timeout" or "closed"; the partial bytes are consumed.
function Client:receive(pattern, timeout)
  pattern = pattern or "*l"
  local deadline = now() + (timeout or self.timeout)
  local pred, finish
  if pattern == "*l" or pattern == "*L" or pattern == "l" or pattern == "L" then
    pred = function(c) return cut_line(c.buf) end
    finish = function(n)
      local s = self:take(n)
      if pattern:find("l") then s = s:gsub("\r?\n$", "") end
      return s
    end
  elseif math.type(pattern) == "integer" then
    pred = function(c) return #c.buf >= pattern and pattern or nil end
    finish = function(n) return self:take(n) end
  elseif pattern == "*a" or pattern == "a" then
    local v, err = self:wait(function(c) return c.eof and #c.buf or nil end, deadline)
    if not v then
      if err == "closed" then return self:take(#self.buf) end
      return nil, err, self:take(#self.buf)
    end
    return self:take(v)
  elseif type(pattern) == "table" and pattern.delimiter then
    local d = pattern.delimiter
    pred = function(c)
      local s, e = c.buf:find(d, 1, true)
      return s and e or nil
    end
    finish = function(e) return self:take(e):sub(1, -#d - 1) end
  elseif pattern == "resp" then
    local resp = require "hotsock.resp"
    local val
    pred = function(c)
      local v, p = resp.decode(c.buf)
      if v == nil and p then return #c.buf end  -- a protocol error: take it all
      if v == nil then return nil end
      val = v
      return p - 1
    end
    finish = function(n)
      local raw = self:take(n)
      if val == nil then return nil, "Protocol error", raw end
      return val
    end
  else
    error("receive: unknown pattern " .. tostring(pattern), 2)
  end
  local n, err = self:wait(pred, deadline)
  if not n then return nil, err, self:take(#self.buf) end
  return finish(n)
end

-- expect(pattern [, timeout_s]): read a line ("*l") and raise unless the
-- whole line matches the Lua pattern. Returns the captures (or the line).
function Client:expect(pat, timeout)
  local line, err, partial = self:receive("*l", timeout)
  if not line then
    error(("expected a line matching %q, got %s%s"):format(pat, err,
      partial ~= "" and (" after %q"):format(partial) or ""), 2)
  end
  local r = table.pack(line:match(anchored(pat)))
  if r[1] == nil then
    error(("expected a line matching %q, got %q"):format(pat, line), 2)
  end
  return table.unpack(r, 1, r.n)
end

-- expect_closed([timeout_s]): raise unless the peer closes without sending
-- anything more.
function Client:expect_closed(timeout)
  local _, err = self:wait(function(c) return #c.buf > 0 and true or nil end,
    now() + (timeout or self.timeout))
  if #self.buf > 0 then
    error(("expected the server to close, got %q"):format(self.buf), 2)
  end
  if err ~= "closed" and err ~= "connection reset by peer" and not self.eof then
    error("expected the server to close; still open after " .. (timeout or self.timeout) .. " s", 2)
  end
  return true
end

-- shutdown(): half-close (FIN); the client keeps reading.
function Client:shutdown()
  if not self.closed then self.sock:shutdown("send") end
  return true
end

function Client:close()
  if not self.closed then
    self.closed = true
    self.sock:close()
  end
  return true
end

function Client:settimeout(t) self.timeout = t end

---------------------------------------------------------------------------
-- transcripts: parsing
---------------------------------------------------------------------------

local DEFAULT_CLIENT = "c1"

-- parse(text, name) -> {steps = {...}, script = {path, args...} | nil,
-- options = {...}} or nil, "name:line: error"
function WB.parse(text, name)
  name = name or "transcript"
  local steps, meta = {}, { options = {} }
  local client, crlf, lineno = DEFAULT_CLIENT, false, 0
  local function bad(msg) return nil, ("%s:%d: %s"):format(name, lineno, msg) end
  local function add(step)
    step.line, step.client, step.crlf = lineno, client, crlf
    local last = steps[#steps]
    -- consecutive sends of one client go out in one write
    if step.kind == "send" and last and last.kind == "send" and last.client == client then
      last.data = last.data .. step.data
      return
    end
    steps[#steps + 1] = step
  end
  for raw in (text:gsub("\r?\n$", "") .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    local line = raw:gsub("\r$", ""):gsub("^[ \t]+", "")
    if line == "" or line:match("^%s*$") or line:sub(1, 1) == "#" then
      -- blank or comment
    elseif line:sub(1, 1) == "@" then
      local n = line:match("^@([%w_%-%.]+)%s*$")
      if not n then return bad("a client name is letters, digits, _ - . (@c1, @alice)") end
      client = n
      add({ kind = "open" })
    elseif line:sub(1, 1) == "!" then
      local what = line:match("^!%s*(%a+)%s*$")
      if what ~= "close" and what ~= "shutdown" then
        return bad("'!' takes close or shutdown")
      end
      add({ kind = what })
    elseif line:sub(1, 1) == "%" then
      local w = {}
      for word in line:sub(2):gmatch("%S+") do w[#w + 1] = word end
      if #w == 1 and w[1]:match("^%d+$") then
        add({ kind = "sleep", ms = tonumber(w[1]) })
      elseif w[1] == "timeout" and #w == 2 and w[2]:match("^%d+$") and tonumber(w[2]) > 0 then
        add({ kind = "timeout", ms = tonumber(w[2]) })
      elseif w[1] == "eol" and (w[2] == "lf" or w[2] == "crlf") and #w == 2 then
        crlf = w[2] == "crlf"
      elseif w[1] == "script" and #w >= 2 then
        meta.script = { table.unpack(w, 2) }
        meta.script_line = lineno
      elseif w[1] == "options" then
        meta.options = { table.unpack(w, 2) }
      elseif w[1] == "upstream" and #w >= 2 then
        meta.upstream = { table.unpack(w, 2) }
      else
        return bad("unknown '%' line: % MS, % timeout MS, % eol lf|crlf, " ..
          "% script PATH [ARGS], % options OPTIONS, % upstream PATH [ARGS]")
      end
    else
      local sig, rest = line:match("^([<>][|~]?)(.*)$")
      if not sig then
        return bad("a line starts with >, >|, <, <|, <~, @, !, %, # (or is blank)")
      end
      if rest ~= "" and rest:sub(1, 1) ~= " " then
        return bad(("'%s' is followed by one space, then the text"):format(sig))
      end
      local body = rest:sub(2)
      local eol = crlf and "\r\n" or "\n"
      if sig == "<" and body:match("^closed%s*$") then
        add({ kind = "closed", text = line })
      elseif sig == ">~" then
        return bad("'>~' is not a thing: sends are literal (> or >|)")
      elseif sig == "<~" then
        local pat, err = unescape(body)
        if not pat then return bad(err) end
        local ok, perr = pcall(string.find, "", anchored(pat))
        if not ok then return bad("bad Lua pattern: " .. tostring(perr):gsub("^.-:%d+: ", "")) end
        add({ kind = "match", pattern = pat, crlf = crlf, text = line })
      else
        local data, err = unescape(body)
        if not data then return bad(err) end
        if sig:sub(2) ~= "|" then
          data = data .. eol
        elseif data == "" then
          return bad(("'%s' with nothing after it: write '%s' alone for an empty line")
            :format(sig, sig:sub(1, 1)))
        end
        if sig:sub(1, 1) == ">" then
          add({ kind = "send", data = data })
        else
          add({ kind = "expect", data = data, crlf = crlf, text = line })
        end
      end
    end
  end
  meta.steps = steps
  return meta
end

---------------------------------------------------------------------------
-- transcripts: playing
---------------------------------------------------------------------------

-- A failure: where, and the lines of a diff.
local function failure(step, name, headline, expected, got, after)
  return { line = step and step.line or 0, client = step and step.client, name = name,
    headline = headline, expected = expected or {}, got = got or {}, after = after }
end

-- play(t, opts): opts.host, opts.port, opts.timeout (ms), opts.name.
-- Returns nil when every step went as written, else a failure table.
function WB.play(t, opts)
  local clients, list = {}, {}
  local timeout = opts.timeout or WB.DEFAULT_TIMEOUT
  local name = opts.name or "transcript"
  local last_step = {}

  local function open(n)
    local c = clients[n]
    if c and not c.closed then return c end -- closed: by '! close' or '< closed'
    if c then c:close() end
    local nc, err = WB.connect(opts.host, opts.port, timeout / 1000)
    if not nc then return nil, err end
    nc.name = n
    clients[n] = nc
    for i = #list, 1, -1 do if list[i].name == n then table.remove(list, i) end end
    list[#list + 1] = nc
    return nc
  end

  -- what else is already in the buffer, rendered (for a failure report)
  local function rest_of(c, crlf)
    WB.pump({ c }, 0)
    local lines = {}
    if c.buf ~= "" then
      lines = render("<", c.buf:sub(1, 4096), crlf)
      while #lines > 10 do table.remove(lines) end
    end
    if c.eof then lines[#lines + 1] = "< closed" end
    return lines
  end

  local function why_text(err)
    if err == "timeout" then return ("(nothing more within %d ms)"):format(timeout) end
    if err == "closed" then return "(then the server closed the connection)" end
    return "(then the connection failed: " .. tostring(err) .. ")"
  end

  local function play_steps()
    for _, step in ipairs(t.steps) do
      local k = step.kind
      if k == "timeout" then
        timeout = step.ms
      elseif k == "sleep" then
        local deadline = now() + step.ms / 1000
        while now() < deadline do WB.pump(list, deadline - now()) end
      else
        local c, err
        if k == "close" or k == "shutdown" then
          c = clients[step.client]
          if not c or c.closed then
            return failure(step, name, ("@%s is not open"):format(step.client))
          end
        else
          c, err = open(step.client)
          if not c then
            return failure(step, name, ("cannot connect to %s:%d: %s")
              :format(opts.host, opts.port, tostring(err)))
          end
        end
        last_step[step.client] = step
        if k == "send" then
          local ok, serr = c:send(step.data)
          if not ok then
            return failure(step, name, "send failed: " .. tostring(serr), nil, nil)
          end
        elseif k == "expect" then
          local e = step.data
          local n, werr = c:wait(function(cl) return cut_for(cl.buf, e) end,
            now() + timeout / 1000, list)
          local got = n and c:take(n) or c:take(#c.buf)
          if got ~= e then
            local exp_lines = { step.text }
            local got_lines = got ~= "" and render("<", got, step.crlf) or {}
            local after
            if n then after = rest_of(c, step.crlf)
            else got_lines[#got_lines + 1] = why_text(werr) end
            return failure(step, name, "the server answered differently",
              exp_lines, got_lines, after)
          end
        elseif k == "match" then
          local n, werr = c:wait(function(cl) return cut_line(cl.buf) end,
            now() + timeout / 1000, list)
          local got = n and c:take(n) or c:take(#c.buf)
          local body = got:match("^(.-)\n$")
          if body and step.crlf then body = body:match("^(.-)\r$") end
          if not (body and body:match(anchored(step.pattern))) then
            local got_lines = got ~= "" and render("<", got, step.crlf) or {}
            local after
            if n then after = rest_of(c, step.crlf)
            else got_lines[#got_lines + 1] = why_text(werr) end
            return failure(step, name, "the line does not match the pattern",
              { step.text }, got_lines, after)
          end
        elseif k == "closed" then
          local _, werr = c:wait(function() return nil end, now() + timeout / 1000, list)
          if c.buf ~= "" or werr == "timeout" then
            local got_lines = c.buf ~= "" and render("<", c:take(#c.buf), step.crlf) or {}
            if werr == "timeout" then
              got_lines[#got_lines + 1] = ("(still open after %d ms)"):format(timeout)
            else
              got_lines[#got_lines + 1] = "< closed"
            end
            return failure(step, name, "expected the server to close the connection",
              { "< closed" }, got_lines)
          end
          c:close()
        elseif k == "close" then
          -- what is there now would never be read: a difference. (Not so at
          -- a shutdown: the lines after it may expect an answer already on
          -- its way.)
          WB.pump({ c }, 0)
          if c.buf ~= "" then
            return failure(step, name, "more came than the transcript expects before '! close'",
              {}, render("<", c.buf:sub(1, 4096), step.crlf))
          end
          c:close()
        elseif k == "shutdown" then
          c:shutdown()
        end
        -- "open": opening was the whole step
      end
    end

    -- Anything the transcript does not expect, arriving promptly, is a
    -- difference too.
    local deadline = now() + WB.SETTLE
    while now() < deadline do WB.pump(list, deadline - now()) end
    for _, c in ipairs(list) do
      if not c.closed and c.buf ~= "" then
        local step = last_step[c.name] or { line = 0, client = c.name }
        return failure(step, name, "more came than the transcript expects after this line",
          {}, render("<", c.buf:sub(1, 4096), step.crlf))
      end
    end
    return nil
  end

  local ok, f = pcall(play_steps)
  for _, c in ipairs(list) do c:close() end
  if not ok then error(f, 0) end
  return f
end

-- The lines describing a failure (without indentation).
function WB.describe(f)
  local out = {}
  out[#out + 1] = ("%s%s%s: %s"):format(f.name, f.line > 0 and (":" .. f.line) or "",
    f.client and (" (@" .. f.client .. ")") or "", f.headline)
  for _, l in ipairs(f.expected) do out[#out + 1] = "- " .. l end
  for _, l in ipairs(f.got) do out[#out + 1] = "+ " .. l end
  if f.after and #f.after > 0 then
    out[#out + 1] = "then came:"
    for _, l in ipairs(f.after) do out[#out + 1] = "  " .. l end
  end
  for _, l in ipairs(f.log or {}) do out[#out + 1] = l end
  return out
end

-- Lines of a server's stderr worth showing next to a failure: warnings,
-- errors and what follows them (tracebacks), at most `max`.
local function log_excerpt(text, max)
  local out, keep = {}, false
  for l in text:gmatch("[^\n]+") do
    local level = l:match("^%S+Z (%a+) ")
    if level then keep = level == "warn" or level == "error" end
    if keep or l:find("Sanitizer", 1, true) or l:find("runtime error:", 1, true) then
      out[#out + 1] = l
    end
  end
  while #out > max do table.remove(out, 1) end
  return out
end

---------------------------------------------------------------------------
-- hotsock test
---------------------------------------------------------------------------

local TEST_USAGE = [[
usage: hotsock test [options] [SCRIPT] FILE...

Play each conversation transcript FILE against SCRIPT, started fresh for
each file on a free port of 127.0.0.1 (without SCRIPT, each file names its
own with a '% script PATH' line). The file format is in docs/testing.md.

options:
      --timeout MS        time each expectation may wait (default 2000)
      --connect HOST:PORT play against a server already running there,
                          instead of starting one
      --tap               TAP output (for CI)
      --bin PATH          start servers with this hotsock binary
  -h, --help              print this help

SCRIPT is recognised by its .lua ending. Exit status: 0 when every file
passed, 1 when one failed, 2 for bad usage or a file that does not parse.
]]

local function usage_error(cmd, msg)
  io.stderr:write(("hotsock %s: %s\n"):format(cmd, msg))
  io.stderr:write(("Try 'hotsock %s --help'.\n"):format(cmd))
  return 2
end

-- Options: {name = "takes a value"?}. Returns opts, positional or nil, err.
local function getopt(args, spec)
  local o, pos, i = {}, {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local name, val = a:match("^%-%-([%w%-]+)=(.*)$")
      name = name or a:match("^%-%-([%w%-]+)$") or a:match("^%-(%a)$")
      if not name or spec[name] == nil then return nil, "unknown option " .. a end
      name = spec[name] == "alias" and spec["=" .. name] or name
      if spec[name] then
        if val == nil then
          i = i + 1
          val = args[i]
          if val == nil then return nil, a .. " needs a value" end
        end
        o[name] = val
      else
        if val then return nil, a .. " takes no value" end
        o[name] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return o, pos
end

local function ms_option(v, what)
  local n = tonumber(v)
  if not n or n <= 0 or math.floor(n) ~= n then
    return nil, what .. " takes a positive number of milliseconds, not " .. tostring(v)
  end
  return n
end

local function run_tests(args)
  local o, pos = getopt(args, { timeout = true, connect = true, tap = false, bin = true,
    help = false, h = "alias", ["=h"] = "help" })
  if not o then return usage_error("test", pos) end
  if o.help then io.stdout:write(TEST_USAGE) return 0 end
  local timeout = WB.DEFAULT_TIMEOUT
  if o.timeout then
    local err
    timeout, err = ms_option(o.timeout, "--timeout")
    if not timeout then return usage_error("test", err) end
  end
  local chost, cport
  if o.connect then
    chost, cport = parse_hostport(o.connect, "127.0.0.1")
    if not chost or chost == "*" then
      return usage_error("test", "--connect takes HOST:PORT, not " .. o.connect)
    end
  end
  local script
  if pos[1] and pos[1]:match("%.lua$") then
    script = table.remove(pos, 1)
    if o.connect then
      return usage_error("test", "--connect plays against a running server: give no SCRIPT")
    end
    if not file_exists(script) then return usage_error("test", "cannot open script " .. script) end
  end
  if #pos == 0 then return usage_error("test", "no transcript FILE given") end
  local bin = o.bin or (sys and sys.exe()) or "hotsock"

  -- parse every file first: a bad file stops the run before any server
  local files, bad = {}, false
  for _, path in ipairs(pos) do
    local text = read_file(path)
    local t, err
    if not text then err = path .. ": cannot read the file"
    else t, err = WB.parse(text, path) end
    if t and not script and not o.connect and not t.script then
      err = path .. ": no SCRIPT given and the file has no '% script PATH' line"
    end
    if not t or err then
      io.stderr:write("hotsock test: ", err, "\n")
      bad = true
    else
      t.path = path
      files[#files + 1] = t
    end
  end
  if bad then return 2 end

  local tap = o.tap
  local out = io.stdout
  if tap then out:write("TAP version 13\n", ("1..%d\n"):format(#files)) end
  local passed, failed = 0, 0
  for i, t in ipairs(files) do
    local t0 = now()
    local f, srv, up
    local ok, err = pcall(function()
      local host, port = chost, cport
      if not o.connect then
        local spath, sargs
        if script then
          spath, sargs = script, {}
        else
          spath = t.script[1]
          if spath:sub(1, 1) ~= "/" then spath = dirname(t.path) .. "/" .. spath end
          sargs = { table.unpack(t.script, 2) }
        end
        local serr, log
        if t.upstream then
          -- '% upstream PATH [ARGS]': a second script started first, for a
          -- relay to talk to; "{upstream}" in the script's ARGS becomes
          -- its host:port.
          local upath = t.upstream[1]
          if upath:sub(1, 1) ~= "/" then upath = dirname(t.path) .. "/" .. upath end
          up, serr, log = WB.start_server({ bin = bin, script = upath,
            options = { "--no-watch" }, args = { table.unpack(t.upstream, 2) } })
          if not up then
            f = failure({ line = 0 }, t.path, ("upstream %s did not start: %s"):format(upath, serr))
            return
          end
          for k, a in ipairs(sargs) do
            local addr = up.host .. ":" .. up.port
            sargs[k] = (a:gsub("{upstream}", (addr:gsub("%%", "%%%%"))))
          end
        end
        local options = { "--no-watch" }
        for _, a in ipairs(t.options) do options[#options + 1] = a end
        srv, serr, log = WB.start_server({ bin = bin, script = spath, options = options,
          args = sargs })
        if not srv then
          f = failure({ line = t.script_line or 0 }, t.path,
            ("%s did not start: %s"):format(spath, serr))
          f.log = { "server log:" }
          for l in (log or ""):gmatch("[^\n]+") do f.log[#f.log + 1] = "  " .. l end
          while #f.log > 21 do table.remove(f.log, 2) end
          return
        end
        host, port = srv.host, srv.port
      end
      f = WB.play(t, { host = host, port = port, timeout = timeout, name = t.path })
    end)
    if srv then
      local rc, killed = srv:stop(8, true)
      local text = srv.final_stderr or ""
      local rep = WB.sanitizer_report(text)
      if ok and not f and (rep or killed or rc ~= 0) then
        f = failure(nil, t.path, rep and "sanitizer report in the server's stderr"
          or killed and "the server did not stop within 8 s of SIGTERM (killed)"
          or ("the server exited with code %d"):format(rc))
        f.log = {}
        for l in (rep or text:sub(-2000)):gmatch("[^\n]+") do f.log[#f.log + 1] = "  " .. l end
      elseif f and not f.log then
        local ex = log_excerpt(text, 15)
        if #ex > 0 then
          f.log = { "server log:" }
          for _, l in ipairs(ex) do f.log[#f.log + 1] = "  " .. l end
        end
      end
      srv:stop()
    end
    if up then up:stop() end
    if not ok then
      if type(err) == "table" and err.interrupted then error(err, 0) end
      f = failure(nil, t.path, "internal error: " .. tostring(err))
    end
    local dt = now() - t0
    if f then
      failed = failed + 1
      local lines = WB.describe(f)
      if tap then
        out:write(("not ok %d - %s\n"):format(i, t.path))
        for _, l in ipairs(lines) do out:write("# ", l, "\n") end
      else
        out:write(("FAILED  %s\n"):format(t.path))
        for _, l in ipairs(lines) do out:write("    ", l, "\n") end
      end
    else
      passed = passed + 1
      if tap then out:write(("ok %d - %s\n"):format(i, t.path))
      else out:write(("passed  %s (%.2f s)\n"):format(t.path, dt)) end
    end
    out:flush()
  end
  if not tap then
    out:write(("%d transcript%s: %d passed, %d failed\n"):format(#files,
      #files == 1 and "" or "s", passed, failed))
  end
  return failed > 0 and 1 or 0
end

---------------------------------------------------------------------------
-- hotsock record
---------------------------------------------------------------------------

local RECORD_USAGE = [[
usage: hotsock record --upstream HOST:PORT [options] FILE

Relay clients to a real server and write what each side said to FILE as a
transcript (docs/testing.md): client bytes as '>' lines, server bytes as
'<' lines, each client as @c1, @c2... in the order they connected. Stops on
SIGINT/SIGTERM (or after --count connections) and writes the file;
`hotsock test SCRIPT FILE` then replays it against a prototype.

options:
      --upstream HOST:PORT  the real server
      --listen ADDR         where clients connect: host:port, :port or port
                            (default 127.0.0.1:0, a free port; the
                            'listening on' line on stderr says which)
      --count N             stop after N client connections have finished
      --eol auto|lf|crlf    the line end '>' and '<' lines stand for
                            (default auto: the one most lines end with)
  -h, --help                print this help
]]

-- Relay state per client: its sockets, name and whether each way is done.
local function run_record(args)
  local o, pos = getopt(args, { upstream = true, listen = true, count = true, eol = true,
    help = false, h = "alias", ["=h"] = "help" })
  if not o then return usage_error("record", pos) end
  if o.help then io.stdout:write(RECORD_USAGE) return 0 end
  if not o.upstream then return usage_error("record", "--upstream HOST:PORT is required") end
  local uhost, uport = parse_hostport(o.upstream, "127.0.0.1")
  if not uhost or uhost == "*" then
    return usage_error("record", "--upstream takes HOST:PORT, not " .. o.upstream)
  end
  local lhost, lport = parse_hostport(o.listen or "127.0.0.1:0", "127.0.0.1")
  if not lhost then return usage_error("record", "--listen takes HOST:PORT, :PORT or PORT") end
  if o.listen and o.listen:match("^:%d+$") then lhost = "*" end -- as hotsock -l :PORT
  local count
  if o.count then
    count = tonumber(o.count)
    if not count or count < 1 or math.floor(count) ~= count then
      return usage_error("record", "--count takes a positive integer")
    end
  end
  local eol = o.eol or "auto"
  if eol ~= "auto" and eol ~= "lf" and eol ~= "crlf" then
    return usage_error("record", "--eol is auto, lf or crlf")
  end
  if #pos ~= 1 then return usage_error("record", "give one FILE to write") end
  local file = pos[1]
  do -- can we write there at all? (better to know now than after a session)
    local f, err = io.open(file .. ".tmp", "wb")
    if not f then return usage_error("record", "cannot write " .. file .. ": " .. tostring(err)) end
    f:close()
    os.remove(file .. ".tmp")
  end

  local server, err = socket.bind(lhost == "*" and "0.0.0.0" or lhost, lport)
  if not server then
    io.stderr:write(("hotsock record: cannot listen on %s: %s\n"):format(o.listen or "", err))
    return 1
  end
  server:settimeout(0)
  local sip, sport = server:getsockname()
  io.stderr:write(("hotsock record: relaying to %s:%d, writing %s\n"):format(uhost, uport, file))
  if sip:find(":", 1, true) then sip = "[" .. sip .. "]" end
  io.stderr:write(("listening on %s:%d\n"):format(sip, sport))
  io.stderr:flush()
  if sys then sys.trap() end

  local events = {}     -- {name, kind = ">" | "<" | "eof>" | "eof<", data}
  local sessions = {}   -- open relays
  local nclients, finished = 0, 0
  local function event(s, kind, data)
    local last = events[#events]
    if data and last and last.name == s.name and last.kind == kind then
      last.data = last.data .. data
    else
      events[#events + 1] = { name = s.name, kind = kind, data = data }
    end
  end
  local function finish(s)
    if s.done then return end
    s.done = true
    s.client:close()
    if s.up then s.up:close() end
    finished = finished + 1
    io.stderr:write(("hotsock record: %s finished (%d bytes up, %d down)\n")
      :format(s.name, s.bytes_up, s.bytes_down))
  end
  local function send_all(sock, data)
    sock:settimeout(5)
    local okk, serr = sock:send(data)
    sock:settimeout(0)
    return okk, serr
  end

  local stopped
  local ok, perr = pcall(function()
    while true do
      if sys and sys.caught() then stopped = sys.caught() break end
      if count and finished >= count then break end
      local socks, by = { server }, {}
      for _, s in ipairs(sessions) do
        if not s.done then
          if not s.client_eof then socks[#socks + 1] = s.client by[s.client] = s end
          socks[#socks + 1] = s.up
          by[s.up] = s
          -- a server that keeps its side open after the client left
          if s.client_eof and now() > s.client_eof + 2 then finish(s) end
        end
      end
      local r = socket.select(socks, nil, 0.1)
      for _, sk in ipairs(r or {}) do
        if sk == server then
          local c = server:accept()
          if c then
            nclients = nclients + 1
            local s = { name = "c" .. nclients, client = c, bytes_up = 0, bytes_down = 0 }
            local up = socket.tcp()
            up:settimeout(3)
            local cok, cerr = up:connect(uhost, uport)
            if not cok then
              io.stderr:write(("hotsock record: c%d: cannot reach %s:%d: %s\n")
                :format(nclients, uhost, uport, tostring(cerr)))
              up:close()
              c:close()
              finished = finished + 1
            else
              c:settimeout(0)
              up:settimeout(0)
              c:setoption("tcp-nodelay", true)
              up:setoption("tcp-nodelay", true)
              s.up = up
              sessions[#sessions + 1] = s
              io.stderr:write(("hotsock record: %s connected\n"):format(s.name))
            end
          end
        else
          local s = by[sk]
          if s and not s.done then
            local from_client = sk == s.client
            local data, rerr, partial = sk:receive(65536)
            local got = data or partial
            if got and got ~= "" then
              if from_client then
                event(s, ">", got)
                s.bytes_up = s.bytes_up + #got
                if not send_all(s.up, got) then finish(s) end
              else
                event(s, "<", got)
                s.bytes_down = s.bytes_down + #got
                if not s.client_gone and not send_all(s.client, got) then s.client_gone = true end
              end
            end
            if not data and rerr ~= "timeout" then
              if from_client then
                event(s, "eof>")
                s.client_eof = now()
                s.up:shutdown("send")
              else
                event(s, "eof<")
                finish(s)
              end
            end
          end
        end
      end
    end
  end)
  for _, s in ipairs(sessions) do if not s.done then finish(s) end end
  server:close()
  if not ok then
    io.stderr:write("hotsock record: ", tostring(perr), "\n")
  end

  local text = WB.transcript(events, {
    eol = eol,
    header = ("# recorded by hotsock record: clients relayed to %s:%d, %s")
      :format(uhost, uport, os.date("!%Y-%m-%dT%H:%M:%SZ")),
  })
  local wok, werr = write_file(file, text)
  if not wok then
    io.stderr:write("hotsock record: cannot write ", file, ": ", tostring(werr), "\n")
    return 1
  end
  io.stderr:write(("hotsock record: wrote %s (%d client%s)%s\n"):format(file, nclients,
    nclients == 1 and "" or "s", stopped and (" on " .. stopped) or ""))
  return ok and 0 or 1
end

-- transcript(events, {eol = "auto"|"lf"|"crlf", header = "# ..."}) -> text.
-- events: {name, kind = ">" | "<" | "eof>" | "eof<", data}, in order.
function WB.transcript(events, o)
  o = o or {}
  local crlf = o.eol == "crlf"
  if o.eol == nil or o.eol == "auto" then
    local n_crlf, n_lf = 0, 0
    for _, e in ipairs(events) do
      if e.data then
        local all = select(2, e.data:gsub("\n", ""))
        local cr = select(2, e.data:gsub("\r\n", ""))
        n_crlf, n_lf = n_crlf + cr, n_lf + all - cr
      end
    end
    crlf = n_crlf > n_lf
  end
  local out = {}
  if o.header then out[#out + 1] = o.header end
  if crlf then out[#out + 1] = "% eol crlf" end
  local current
  local gone = {} -- name -> the transcript has closed that client
  for i, e in ipairs(events) do
    if not gone[e.name] then
      if e.name ~= current then
        out[#out + 1] = ""
        out[#out + 1] = "@" .. e.name
        current = e.name
      end
      if e.kind == ">" or e.kind == "<" then
        for _, l in ipairs(render(e.kind, e.data, crlf)) do out[#out + 1] = l end
      elseif e.kind == "eof<" then
        out[#out + 1] = "< closed"
        gone[e.name] = true
      else -- the client closed: did the server still say something after?
        local more = false
        for j = i + 1, #events do
          if events[j].name == e.name and events[j].kind == "<" then more = true break end
        end
        if more then
          out[#out + 1] = "! shutdown"
        else
          out[#out + 1] = "! close"
          gone[e.name] = true
        end
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

---------------------------------------------------------------------------
-- entry point: the binary calls main("test" | "record", {args...})
---------------------------------------------------------------------------

function WB.main(cmd, args)
  local run = cmd == "record" and run_record or run_tests
  if cmd == "test" and sys then sys.trap() end
  local ok, rc = xpcall(run, function(e)
    if type(e) == "table" then return e end
    return debug.traceback(tostring(e), 2)
  end, args)
  WB.stop_all()
  if ok then return rc end
  if type(rc) == "table" and rc.interrupted then
    io.stderr:write(("hotsock %s: interrupted (%s)\n"):format(cmd, rc.interrupted))
    return 130
  end
  io.stderr:write(("hotsock %s: internal error: %s\n"):format(cmd, tostring(rc)))
  return 2
end

return WB
