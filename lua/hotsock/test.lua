-- hotsock.test: drive a hotsock script from your own busted specs.
--
--   local T = require "hotsock.test"
--   after_each(T.stop_all)
--
--   it("echoes", function()
--     local srv = T.start("echo.lua")          -- a path, or the source itself
--     local c = srv:client()
--     c:send("hi\n")
--     assert.equal("hi", c:receive("*l"))
--     c:expect("h.")                           -- a line matching a Lua pattern
--     assert.equal(0, srv:stop())
--   end)
--
-- T.start runs the real binary as a child process on a free port of
-- 127.0.0.1 (-l 127.0.0.1:0, the port read from its "listening on" line).
-- The binary is opts.bin, else $HOTSOCK_BIN, else build/hotsock of the
-- tree this file is in, else the installed one beside it, else `hotsock`
-- on the PATH. Clients are the workbench's (hotsock.workbench), the same
-- code `hotsock test` plays transcripts with. docs/testing.md has more.
--
-- Needs LuaSocket (Debian: lua-socket).

local WB = require "hotsock.workbench"

local T = {}

local HERE do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  HERE = WB.dirname(src)                   -- .../lua/hotsock
  if HERE:sub(1, 1) ~= "/" then
    local f = io.popen("pwd")
    local cwd = f:read("l")
    f:close()
    HERE = HERE == "." and cwd or (cwd .. "/" .. HERE)
  end
end
local LUA_DIR = WB.dirname(HERE)           -- .../lua (or .../share/hotsock/lua)

local function find_bin(opts)
  if opts.bin then return opts.bin end
  local env = os.getenv("HOTSOCK_BIN")
  if env and env ~= "" then return env end
  for _, p in ipairs({ LUA_DIR .. "/../build/hotsock", LUA_DIR .. "/../../../bin/hotsock" }) do
    if WB.file_exists(p) then return p end
  end
  return "hotsock"
end

local running = {}

local Server = {}
Server.__index = Server

-- start(script [, opts]) -> server. `script` is a path, or the script's
-- source when it holds a newline (written to a temp file). opts:
--   listen   address(es) to listen on (default "127.0.0.1:0"; false: the
--            script's own)
--   options  list of hotsock options ({"--max-frame", "1024"})
--   args     list of arguments for the script (its `arg`)
--   env      {NAME = value} for the server's environment
--   files    {name = source} more files next to a source script
--   name     the file name of a source script (default "script.lua")
--   watch    true: keep the file watcher (reload() then only rewrites
--            the file); default off, and reload() sends SIGHUP
--   timeout  s to wait for the "listening on" line (default 10)
--   client_timeout  s a client read waits by default (default 3)
--   bin      the hotsock binary
function T.start(script, opts)
  opts = opts or {}
  local dir = WB.mktempdir()
  local path = script
  if script:find("\n", 1, true) then
    path = dir .. "/" .. (opts.name or "script.lua")
    assert(WB.write_file(path, script))
    for name, text in pairs(opts.files or {}) do
      local p = dir .. "/" .. name
      if name:find("/", 1, true) then os.execute("mkdir -p " .. WB.quote(WB.dirname(p))) end
      assert(WB.write_file(p, text))
    end
  elseif not WB.file_exists(path) then
    WB.rmtempdir(dir)
    error("hotsock.test: no script at " .. path, 2)
  end
  local options = {}
  if not opts.watch then options[1] = "--no-watch" end
  for _, o in ipairs(opts.options or {}) do options[#options + 1] = o end
  -- the helpers next to this module are found by the server too
  local env = {}
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local lp = env.HOTSOCK_LUA_PATH or os.getenv("HOTSOCK_LUA_PATH") or ""
  env.HOTSOCK_LUA_PATH = (lp ~= "" and (lp .. ";") or "") .. LUA_DIR .. "/?.lua"
  local proc, err, log = WB.start_server({
    bin = find_bin(opts), script = path, listen = opts.listen, options = options,
    args = opts.args, env = env, timeout = opts.timeout, dir = dir,
  })
  if not proc then
    WB.rmtempdir(dir)
    error(("hotsock.test: %s did not start: %s\n%s"):format(path, err, (log or ""):sub(-3000)), 2)
  end
  local srv = setmetatable({
    proc = proc, pid = proc.pid, dir = dir, script = path, watch = opts.watch,
    host = proc.host, port = proc.port, addr = proc.addrs[1], addrs = proc.addrs,
    clients = {}, client_timeout = opts.client_timeout or 3,
  }, Server)
  running[#running + 1] = srv
  return srv
end

-- client([opts]) -> a connected client: send(...), receive(pattern
-- [, timeout_s]), expect(pattern [, timeout_s]), expect_closed([timeout_s]),
-- shutdown(), close(), settimeout(s). opts.timeout: its default wait (s).
function Server:client(opts)
  opts = opts or {}
  local c, err = WB.connect(self.host, self.port, opts.timeout or self.client_timeout)
  if not c then
    error(("hotsock.test: cannot connect to %s: %s\n%s"):format(self.addr, tostring(err),
      self:log():sub(-2000)), 2)
  end
  self.clients[#self.clients + 1] = c
  return c
end

-- log() -> the server's stderr so far.
function Server:log()
  if self.stopped then return self.final_log or "" end
  return self.proc:stderr()
end

-- wait_log(pattern [, timeout_s [, plain]]) -> the match (or captures);
-- raises with the log's tail when nothing matched within timeout (3 s).
function Server:wait_log(pattern, timeout, plain)
  local deadline = WB.now() + (timeout or 3)
  while true do
    local text = self:log()
    if plain then
      if text:find(pattern, 1, true) then return pattern end
    else
      local r = table.pack(text:match(pattern))
      if r[1] ~= nil then return table.unpack(r, 1, r.n) end
    end
    if WB.now() >= deadline or self.stopped then
      error(("hotsock.test: the log did not match %q within %g s; it was:\n%s")
        :format(pattern, timeout or 3, text:sub(-3000)), 2)
    end
    WB.sleep(0.01)
  end
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

-- reload(new_source [, timeout_s]): rewrite the script file and wait for
-- the server's "reloaded" line; raises with the reason when the reload
-- fails. Returns the new generation number.
function Server:reload(source, timeout)
  local before = self:log()
  local ok_n, bad_n = count(before, "reloaded %("), count(before, "reload %([^)]*%) failed")
  assert(WB.write_file(self.script, source))
  if not self.watch then self.proc:signal("HUP") end
  local deadline = WB.now() + (timeout or 5)
  while true do
    local text = self:log()
    if count(text, "reloaded %(") > ok_n then
      local gens = {}
      for g in text:gmatch("reloaded %([^)]*%): generation (%d+)") do gens[#gens + 1] = g end
      return tonumber(gens[#gens])
    end
    if count(text, "reload %([^)]*%) failed") > bad_n then
      local lines = {}
      for l in text:gmatch("[^\n]*reload %([^)]*%) failed[^\n]*") do lines[#lines + 1] = l end
      error("hotsock.test: " .. lines[#lines], 2)
    end
    if WB.now() >= deadline then
      error(("hotsock.test: no 'reloaded' line within %g s; log:\n%s")
        :format(timeout or 5, text:sub(-3000)), 2)
    end
    WB.sleep(0.01)
  end
end

-- stats([timeout_s]) -> the server's hs.stats() counters as a table
-- ({accepted = 3, active = 1, ...}). The server logs them on SIGUSR2 as one
-- line, "stats accepted=3 ..."; this sends the signal and reads that line.
function Server:stats(timeout)
  local before = count(self:log(), "\n[^\n]* info stats ")
  self.proc:signal("USR2")
  local deadline = WB.now() + (timeout or 3)
  while true do
    local text = self:log()
    if count(text, "\n[^\n]* info stats ") > before then
      local last
      for l in text:gmatch("\n[^\n]* info stats ([^\n]*)") do last = l end
      local t = {}
      for k, v in last:gmatch("(%w[%w_]*)=(%d+)") do t[k] = tonumber(v) end
      return t
    end
    if WB.now() >= deadline or self.stopped then
      error(("hotsock.test: no stats line within %g s; log:\n%s")
        :format(timeout or 3, text:sub(-3000)), 2)
    end
    WB.sleep(0.01)
  end
end

-- signal(name): send a signal ("HUP", "TERM"...) to the server.
function Server:signal(name) return self.proc:signal(name) end

-- stop([timeout_s]) -> exit code. Closes the clients, sends SIGTERM, and
-- SIGKILL after timeout (8 s), which raises. Also raises on a sanitizer
-- report in the server's stderr.
function Server:stop(timeout)
  if self.stopped then return self.rc end
  for _, c in ipairs(self.clients) do pcall(c.close, c) end
  local rc, killed = self.proc:stop(timeout or 8, true)
  self.final_log = self.proc.final_stderr or ""
  self.stopped, self.rc = true, rc
  WB.rmtempdir(self.dir)
  for i = #running, 1, -1 do if running[i] == self then table.remove(running, i) end end
  local rep = WB.sanitizer_report(self.final_log)
  if rep then error("hotsock.test: sanitizer report in the server's stderr:\n" .. rep, 2) end
  if killed then
    error(("hotsock.test: the server did not stop within %g s of SIGTERM; killed. Log:\n%s")
      :format(timeout or 8, self.final_log:sub(-3000)), 2)
  end
  return rc
end

-- stop_all(): stop every server still running (for after_each); raises
-- after stopping them all when one of them hung or had a sanitizer report.
function T.stop_all()
  local errs = {}
  while #running > 0 do
    local ok, err = pcall(Server.stop, running[#running])
    if not ok then errs[#errs + 1] = tostring(err) end
  end
  if #errs > 0 then error(table.concat(errs, "\n"), 2) end
end

-- connect(host, port [, timeout_s]): a client of any server (the same
-- methods as srv:client()).
function T.connect(host, port, timeout)
  local c, err = WB.connect(host, port, timeout)
  if not c then error(("hotsock.test: cannot connect to %s:%d: %s"):format(host, port, err), 2) end
  return c
end

T.match_line = WB.match_line

return T
