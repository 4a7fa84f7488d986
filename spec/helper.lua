-- spec/helper.lua: start the real hotsock binary and talk to it.
--
-- Used by every spec:
--   package.path = "spec/?.lua;" .. package.path
--   local H = require "helper"
--   after_each(H.cleanup)
--
-- Every server started through H.start is registered; H.cleanup() stops
-- the ones still running (SIGTERM, then SIGKILL) and fails the test when a
-- sanitizer report shows up in a server's stderr. Only PIDs this helper
-- started are ever signalled.

local socket = require "socket"

local H = {}

---------------------------------------------------------------------------
-- paths and small utilities
---------------------------------------------------------------------------

local function dirname(p)
  return (p:match("^(.*)/[^/]*$")) or "."
end

local function shell_out(cmd)
  local f = assert(io.popen(cmd, "r"))
  local s = f:read("a")
  f:close()
  return s
end

local function q(s)
  s = tostring(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end
H.quote = q

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
H.write_file = write_file
H.file_exists = file_exists

local ROOT
do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = dirname(src)                -- .../spec
  if dir:sub(1, 1) ~= "/" then
    local cwd = shell_out("pwd"):gsub("%s+$", "") -- PWD may be a parent shell's
    dir = (dir == ".") and cwd or (cwd .. "/" .. dir)
  end
  ROOT = dirname(dir)
end
H.root = ROOT
H.bin = os.getenv("HOTSOCK_BIN") or (ROOT .. "/build/hotsock")

local function mktempdir()
  local d = shell_out("mktemp -d /tmp/hotsock-spec.XXXXXX"):gsub("%s+$", "")
  assert(d ~= "", "mktemp -d failed")
  return d
end

local tempdirs = {}
local function tempdir()
  local d = mktempdir()
  tempdirs[#tempdirs + 1] = d
  return d
end
H.tempdir = tempdir

-- Write `src` to a fresh temp file and return its path.
function H.write_script(src, name)
  local d = tempdir()
  local p = d .. "/" .. (name or "script.lua")
  write_file(p, src)
  return p
end

local function is_source(s, opts)
  if opts and opts.source ~= nil then return opts.source end
  return s:find("\n", 1, true) ~= nil
end

local function script_path(s, opts)
  if is_source(s, opts) then
    local p = H.write_script(s, opts and opts.script_name)
    -- opts.files: more files to put next to the script ({name = text};
    -- a name may have folders: "lib/util.lua")
    for name, text in pairs(opts and opts.files or {}) do
      local path = dirname(p) .. "/" .. name
      if name:find("/", 1, true) then os.execute("mkdir -p " .. q(dirname(path))) end
      write_file(path, text)
    end
    return p
  end
  if s:sub(1, 1) ~= "/" and not file_exists(s) and file_exists(ROOT .. "/" .. s) then
    return ROOT .. "/" .. s
  end
  return s
end

local SANITIZER_MARKERS = {
  "ERROR: AddressSanitizer",
  "ERROR: LeakSanitizer",
  "runtime error:",
  "WARNING: ThreadSanitizer",
}

-- Returns the sanitizer report in `text`, or nil.
function H.sanitizer_report(text)
  if not text then return nil end
  for _, m in ipairs(SANITIZER_MARKERS) do
    local i = text:find(m, 1, true)
    if i then
      local from = math.max(1, i - 200)
      return text:sub(from, from + 4000)
    end
  end
  return nil
end

local function sanitizer_check(text, what)
  local rep = H.sanitizer_report(text)
  if rep then
    error(("sanitizer report in %s:\n%s"):format(what or "hotsock stderr", rep), 0)
  end
end

function H.sleep(s) socket.sleep(s) end
function H.now() return socket.gettime() end

-- Poll fn() every `step` s until it returns a truthy value or `timeout` s
-- pass. Returns fn's values or nil.
function H.wait_until(fn, timeout, step)
  local deadline = socket.gettime() + (timeout or 3)
  step = step or 0.01
  while true do
    local r = table.pack(fn())
    if r[1] then return table.unpack(r, 1, r.n) end
    if socket.gettime() >= deadline then return nil end
    socket.sleep(step)
  end
end

---------------------------------------------------------------------------
-- servers
---------------------------------------------------------------------------

local running = {}   -- every server started and not yet cleaned up

local Server = {}
Server.__index = Server

function Server:stderr() return read_file(self.errfile) or "" end
function Server:stdout() return read_file(self.outfile) or "" end

function Server:exit_code()
  if self.rc ~= nil then return self.rc end
  local s = read_file(self.rcfile)
  if s and s:match("%d") then
    self.rc = tonumber(s:match("%d+"))
    return self.rc
  end
  return nil
end

function Server:exited() return self:exit_code() ~= nil end

-- Wait up to `timeout` seconds for the process to exit; returns its exit
-- code (128+N when killed by signal N), or nil when it is still running.
function Server:wait_exit(timeout)
  return H.wait_until(function() return self:exit_code() end, timeout or 5, 0.02)
end

local SIGNALS = { HUP = true, INT = true, TERM = true, KILL = true, USR1 = true,
  USR2 = true, QUIT = true, STOP = true, CONT = true, PIPE = true }

function Server:signal(name)
  name = tostring(name):upper():gsub("^SIG", "")
  assert(SIGNALS[name], "unknown signal " .. name)
  if self:exited() then return false end   -- never signal a reused PID
  assert(self.pid and self.pid > 1, "no pid")
  os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid))
  return true
end

-- SIGTERM, wait up to 8 s, return the exit code. If it hangs: SIGKILL and
-- fail. Also fails on a sanitizer report in stderr.
function Server:stop(timeout)
  local rc = self:exit_code()
  if rc == nil then
    self:signal("TERM")
    rc = self:wait_exit(timeout or 8)
    if rc == nil then
      self:signal("KILL")
      self:wait_exit(3)
      self.stopped = true
      sanitizer_check(self:stderr())
      error(("hotsock (pid %d) did not exit within %ds of SIGTERM; killed.\nstderr:\n%s")
        :format(self.pid, timeout or 8, self:stderr():sub(-3000)), 2)
    end
  end
  self.stopped = true
  sanitizer_check(self:stderr())
  return rc
end

-- Kill without ceremony (used by cleanup after a failure).
function Server:kill()
  if not self:exited() then
    self:signal("KILL")
    self:wait_exit(3)
  end
end

local function parse_addr(addr)
  if addr:match("^unix:") then return { unix = addr:sub(6) } end
  local h, p = addr:match("^%[(.*)%]:(%d+)$")
  if h then return { host = h, port = tonumber(p), v6 = true } end
  h, p = addr:match("^(.*):(%d+)$")
  if h then
    if h == "" or h == "0.0.0.0" or h == "*" then h = "127.0.0.1" end
    return { host = h, port = tonumber(p) }
  end
  return nil
end
H.parse_addr = parse_addr

-- Connect a LuaSocket client (timeout ~3 s) to the given listen address
-- (default: the first one the server printed, 127.0.0.1:port).
function H.connect_addr(addr, timeout)
  local a = assert(parse_addr(addr), "cannot parse address " .. tostring(addr))
  local c, err
  if a.unix then
    local unix = require "socket.unix"
    c = assert(unix.stream())
    c:settimeout(timeout or 3)
    local ok, e = c:connect(a.unix)
    if not ok then c:close() return nil, e end
    return c
  end
  c = assert(a.v6 and socket.tcp6() or socket.tcp())
  c:settimeout(timeout or 3)
  local ok
  ok, err = c:connect(a.host, a.port)
  if not ok then c:close() return nil, err end
  return c
end

function Server:connect(addr, timeout)
  addr = addr or self.addrs[1]
  if not addr then addr = "127.0.0.1:" .. tostring(self.port) end
  local c, err = H.connect_addr(addr, timeout)
  if not c then
    error(("cannot connect to %s: %s\nstderr:\n%s"):format(addr, tostring(err), self:stderr():sub(-2000)), 2)
  end
  self.clients[#self.clients + 1] = c
  return c
end

-- Wait until stderr matches `pattern` (a Lua pattern; plain=true for a
-- plain find). Returns the captures / match, or nil after `timeout` s.
function Server:wait_log(pattern, timeout, plain)
  return H.wait_until(function()
    local text = self:stderr()
    if plain then
      return text:find(pattern, 1, true) and pattern
    end
    local r = table.pack(text:match(pattern))
    if r[1] ~= nil then return table.unpack(r, 1, r.n) end
    return nil
  end, timeout or 3, 0.01)
end

-- Like wait_log but raises with the log tail when nothing matched.
function Server:expect_log(pattern, timeout, plain)
  local r = table.pack(self:wait_log(pattern, timeout, plain))
  if r[1] == nil then
    error(("expected stderr to match %q within %.1fs; stderr was:\n%s")
      :format(pattern, timeout or 3, self:stderr():sub(-3000)), 2)
  end
  return table.unpack(r, 1, r.n)
end

-- Count matches of a pattern in stderr.
function Server:count_log(pattern, plain)
  local text, n, i = self:stderr(), 0, 1
  while true do
    local s, e = text:find(pattern, i, plain)
    if not s then return n end
    n = n + 1
    i = e + 1
  end
end

-- Build the shell command line for the binary.
local function command_line(script, opts)
  local parts = { q(H.bin) }
  if opts.listen ~= false then
    local listen = opts.listen or { "127.0.0.1:0" }
    if type(listen) == "string" then listen = { listen } end
    for _, l in ipairs(listen) do
      parts[#parts + 1] = "-l"
      parts[#parts + 1] = q(l)
    end
  end
  for _, a in ipairs(opts.args or {}) do parts[#parts + 1] = q(a) end
  parts[#parts + 1] = q(script)
  for _, a in ipairs(opts.script_args or {}) do parts[#parts + 1] = q(a) end
  return table.concat(parts, " ")
end

local function check_bin()
  if not file_exists(H.bin) then
    error("hotsock binary not found at " .. H.bin ..
      " (build it with: cmake -S . -B build && cmake --build build, or set HOTSOCK_BIN)", 3)
  end
end

-- start(script_path_or_source [, opts]) -> server
-- opts: listen (string or list; false = use the script's own), args (extra
-- options before the script), script_args (after it), expect_listeners
-- (how many "listening on" lines to wait for), timeout (s, default 5),
-- source (force source/path detection), env (table of extra env vars),
-- script_name (file name for source text), files ({name = text} written
-- next to the script), nofile (ulimit -n for the server).
function H.start(script, opts)
  opts = opts or {}
  check_bin()
  local path = script_path(script, opts)
  local d = tempdir()
  local srv = setmetatable({
    dir = d,
    script = path,
    errfile = d .. "/stderr",
    outfile = d .. "/stdout",
    pidfile = d .. "/pid",
    rcfile = d .. "/rc",
    clients = {},
    addrs = {},
  }, Server)
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. q(v) .. " " end
  local cmd = command_line(path, opts)
  -- opts.wrap: a command that execs the rest (it keeps the pid)
  if opts.wrap then cmd = opts.wrap .. " " .. cmd end
  srv.cmd = cmd
  -- opts.nofile: a lower open-file limit for the server
  local pre = opts.nofile and ("ulimit -n %d && "):format(opts.nofile) or ""
  local inner = ("%s%sexec %s 2>%s >%s </dev/null"):format(pre, env, cmd, q(srv.errfile), q(srv.outfile))
  -- the subshell runs the binary in the background so that $! is its real
  -- pid, then waits for it and records the exit code
  local wrapper = ("( %s ) & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s")
    :format(inner, q(srv.pidfile), q(srv.pidfile), q(srv.pidfile),
            q(srv.rcfile), q(srv.rcfile), q(srv.rcfile))
  os.execute("sh -c " .. q(wrapper) .. " >/dev/null 2>&1 </dev/null &")
  running[#running + 1] = srv

  local pid = H.wait_until(function()
    local s = read_file(srv.pidfile)
    return s and tonumber(s:match("%d+"))
  end, 3, 0.005)
  if not pid then error("hotsock did not start (no pid file)", 2) end
  srv.pid = pid

  local want = opts.expect_listeners
  if not want then
    if opts.listen == false then want = 1
    elseif type(opts.listen) == "table" then want = #opts.listen
    else want = 1 end
  end
  local timeout = opts.timeout or 5
  local ok = H.wait_until(function()
    local text = srv:stderr()
    local addrs = {}
    -- [^%s"]: with --log-format json the address is followed by '"}'
    for a in text:gmatch('listening on ([^%s"]+)') do addrs[#addrs + 1] = a end
    srv.addrs = addrs
    if #addrs >= want then return true end
    if srv:exited() then return "exited" end
    return nil
  end, timeout, 0.01)
  if ok ~= true then
    local why = (ok == "exited") and ("exited with code " .. tostring(srv:exit_code()))
      or ("no %d 'listening on' line(s) within %.1fs"):format(want, timeout)
    local err = srv:stderr()
    if not srv:exited() then srv:kill() end
    srv.stopped = true
    sanitizer_check(err)
    error(("hotsock failed to start: %s\ncommand: %s\nstderr:\n%s"):format(why, cmd, err:sub(-3000)), 2)
  end
  for _, a in ipairs(srv.addrs) do
    local pa = parse_addr(a)
    if pa and pa.port then srv.port = pa.port break end
  end
  return srv
end

-- sh(cmd) -> its output (stdout and stderr), its exit code
function H.sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok and 0 or code
end

-- Whether a program is on PATH (a spec skips what needs one that is not).
function H.have(prog)
  return os.execute("command -v " .. prog .. " >/dev/null 2>&1") == true
end

-- A free TCP port on 127.0.0.1 (bound, read, released), for programs that
-- cannot report the port they got (redis-server, HAProxy's frontends).
function H.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Background programs other than hotsock (openssl s_server, HAProxy),
-- stopped by PID in H.cleanup at the latest.
local spawned = {}

-- spawn(cmd [, limit_s]): run the shell command line cmd in the background
-- under `timeout` (limit_s, default 60), its output in files. Returns
-- {pid, out, err, dir}; pid is the timeout process's, which passes SIGTERM
-- on to the command.
function H.spawn(cmd, limit_s)
  local d = H.tempdir()
  local p = { dir = d, out = d .. "/out", err = d .. "/err", pidfile = d .. "/pid", rcfile = d .. "/rc" }
  local inner = ("exec timeout -k 2 %d %s >%s 2>%s </dev/null"):format(limit_s or 60, cmd,
    q(p.out), q(p.err))
  local wrapper = ("( %s ) & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s")
    :format(inner, q(p.pidfile), q(p.pidfile), q(p.pidfile), q(p.rcfile), q(p.rcfile), q(p.rcfile))
  os.execute("sh -c " .. q(wrapper) .. " >/dev/null 2>&1 </dev/null &")
  p.pid = H.wait_until(function()
    local t = H.read_file(p.pidfile)
    return t and tonumber(t:match("%d+"))
  end, 3, 0.005)
  assert(p.pid and p.pid > 1, "could not start: " .. cmd)
  spawned[#spawned + 1] = p
  return p
end

function H.spawn_exited(p) return H.read_file(p.rcfile) ~= nil end

-- SIGTERM, then SIGKILL if it is still there after 5 s.
function H.stop_spawned(p)
  if H.spawn_exited(p) then return end
  os.execute(("kill -TERM %d 2>/dev/null"):format(p.pid))
  if not H.wait_until(function() return H.spawn_exited(p) end, 5, 0.02) then
    os.execute(("kill -KILL %d 2>/dev/null"):format(p.pid))
    H.wait_until(function() return H.spawn_exited(p) end, 3, 0.02)
  end
end

function H.stop_all_spawned()
  local list = spawned
  spawned = {}
  for _, p in ipairs(list) do H.stop_spawned(p) end
end

-- Stop every server still running, close clients, remove temp files.
-- Raises (after cleaning everything) when a server hung or a sanitizer
-- reported something.
function H.cleanup()
  H.stop_all_spawned()
  local errs = {}
  local list = running
  running = {}
  for _, srv in ipairs(list) do
    for _, c in ipairs(srv.clients) do pcall(c.close, c) end
    if not srv.stopped then
      local ok, err = pcall(srv.stop, srv)
      if not ok then errs[#errs + 1] = tostring(err) end
    end
  end
  for _, d in ipairs(tempdirs) do
    if d:match("^/tmp/hotsock%-spec%.") then os.execute("rm -rf " .. q(d)) end
  end
  tempdirs = {}
  if #errs > 0 then error(table.concat(errs, "\n----\n"), 0) end
end

-- Last resort if the runner exits without cleanup: kill what we started.
H._sentinel = setmetatable({}, { __gc = function()
  for _, srv in ipairs(running) do
    if srv.pid and not srv:exited() then
      os.execute(("kill -KILL %d 2>/dev/null"):format(srv.pid))
    end
  end
end })

-- run(args [, opts]) -> exit_code, stdout, stderr
-- One-shot run of the binary (for --check, -h, bad usage). args is a list
-- (each item quoted) or a string (passed to sh as is). opts.timeout (s,
-- default 10): after it the process is killed (exit code 124/137).
function H.run(args, opts)
  opts = opts or {}
  check_bin()
  local d = tempdir()
  local argstr
  if type(args) == "table" then
    local parts = {}
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    argstr = table.concat(parts, " ")
  else
    argstr = args or ""
  end
  -- One-shot runs mostly exit early (usage, --check, load errors), where
  -- LeakSanitizer would report start-up allocations that were never freed
  -- and change the exit code. Leak checking stays on for servers started
  -- with H.start (a full stop must free everything); set
  -- HOTSOCK_SPEC_LEAKS=1 to check one-shot runs too.
  local env = ""
  if os.getenv("HOTSOCK_SPEC_LEAKS") ~= "1" then
    local asan = os.getenv("ASAN_OPTIONS")
    env = "ASAN_OPTIONS=" .. q((asan and asan ~= "" and (asan .. ":") or "") .. "detect_leaks=0") .. " "
  end
  local cmd = ("%stimeout -k 2 %d %s %s >%s 2>%s </dev/null; echo $? >%s")
    :format(env, opts.timeout or 10, q(H.bin), argstr, q(d .. "/out"), q(d .. "/err"), q(d .. "/rc"))
  os.execute("sh -c " .. q(cmd) .. " >/dev/null 2>&1")
  local rc = tonumber((read_file(d .. "/rc") or ""):match("%d+"))
  local out, err = read_file(d .. "/out") or "", read_file(d .. "/err") or ""
  sanitizer_check(err)
  return rc, out, err
end

---------------------------------------------------------------------------
-- client helpers
---------------------------------------------------------------------------

-- Receive one line (LuaSocket "*l": LF stripped, CRs dropped).
function H.line(c)
  return c:receive("*l")
end

-- Receive exactly n bytes.
function H.recv(c, n)
  return c:receive(n)
end

-- Send all of s; raises on failure.
function H.send(c, s)
  local i, err = c:send(s)
  if not i then error("send failed: " .. tostring(err), 2) end
  return i
end

-- Send s one byte at a time with TCP_NODELAY and ~1 ms pauses.
function H.send_bytewise(c, s, pause)
  c:setoption("tcp-nodelay", true)
  for i = 1, #s do
    H.send(c, s:sub(i, i))
    socket.sleep(pause or 0.001)
  end
end

-- Read until the peer closes (or an error/timeout, or `limit` bytes, or
-- `deadline_s` seconds). Returns data, err ("closed", "timeout", ...).
function H.read_all(c, limit, deadline_s)
  local parts, total = {}, 0
  local deadline = socket.gettime() + (deadline_s or 10)
  while true do
    local data, err, partial = c:receive(65536)
    local chunk = data or partial
    if chunk and #chunk > 0 then
      parts[#parts + 1] = chunk
      total = total + #chunk
    end
    if not data then return table.concat(parts), err end
    if limit and total >= limit then return table.concat(parts), nil end
    if socket.gettime() > deadline then return table.concat(parts), "deadline" end
  end
end

-- Expect the connection to be closed by the peer: returns the error
-- ("closed" or "connection reset by peer") and any data still read.
function H.read_to_close(c, deadline_s)
  local data, err = H.read_all(c, nil, deadline_s or 3)
  return err, data
end

-- Expect no data for `t` seconds (returns true if a receive timed out).
function H.quiet(c, t)
  c:settimeout(t or 0.2)
  local data, err, partial = c:receive(1)
  c:settimeout(3)
  return data == nil and err == "timeout" and (partial or "") == "", data or partial, err
end

function H.hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

function H.unhex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

-- True when `id` appears in `line` as a number on its own (not part of a
-- longer number, a time or a date).
function H.has_id_token(line, id)
  id = tostring(id)
  local i = 1
  while true do
    local s, e = line:find("%d+", i)
    if not s then return false end
    local before = s > 1 and line:sub(s - 1, s - 1) or ""
    local after = line:sub(e + 1, e + 1)
    -- times and dates look like 2024-11-25T11:30:12.123Z: reject digits
    -- glued to those separators (but allow "conn 12: ...")
    if line:sub(s, e) == id and not before:match("[:%.%-/T]") and not after:match("[%.%-/]") then
      return true
    end
    i = e + 1
  end
end

-- Lines of `text` containing `needle` (plain).
function H.lines_with(text, needle)
  local out = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    if l:find(needle, 1, true) then out[#out + 1] = l end
  end
  return out
end

return H
