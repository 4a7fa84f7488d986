-- spec/systemd_spec.lua: hotsock under systemd: socket activation (the real
-- systemd-socket-activate), sd_notify (READY, STATUS, RELOADING, STOPPING)
-- and the watchdog, to a notify socket the spec listens on, --user and
-- --group, and the unit files in examples/systemd (systemd-analyze verify).
-- Loopback and temp dirs only; every process is stopped by its PID.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"
local unix = require "socket.unix"

-- A line echo that can also tell what it sees: "env" answers the systemd
-- variables as the process has them, "spin MS" keeps the loop busy.
local ECHO = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "env" then
      local t = {}
      for _, k in ipairs({ "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
                           "WATCHDOG_USEC", "WATCHDOG_PID" }) do
        t[#t + 1] = k .. "=" .. tostring(os.getenv(k))
      end
      conn:send(table.concat(t, " "), "\n")
    elseif line:match("^spin ") then
      local t = os.clock() + tonumber(line:match("%d+")) / 1000
      while os.clock() < t do end
      conn:send("spun\n")
    else
      conn:send(line, "\n")
    end
  end,
}
]]

local NO_VARS = "LISTEN_PID=nil LISTEN_FDS=nil LISTEN_FDNAMES=nil NOTIFY_SOCKET=nil " ..
  "WATCHDOG_USEC=nil WATCHDOG_PID=nil"

local function ask(c, line)
  H.send(c, line .. "\n")
  return H.line(c)
end

local function echo_ok(c)
  assert.are.equal("hello", ask(c, "hello"))
end

---------------------------------------------------------------------------
-- a notify socket (what systemd listens on), with the arrival times
---------------------------------------------------------------------------

local Notify = {}
Notify.__index = Notify

local function notify_socket()
  local path = H.tempdir() .. "/notify"
  local u = assert(unix.dgram())
  assert(u:bind(path))
  local n = setmetatable({ path = path, u = u, msgs = {}, pos = 0 }, Notify)
  return n
end

-- Receive what arrives within t seconds (recording when each came).
function Notify:poll(t)
  local deadline = socket.gettime() + (t or 0)
  repeat
    self.u:settimeout(math.max(0, math.min(0.02, deadline - socket.gettime())))
    local m = self.u:receive()
    if m then self.msgs[#self.msgs + 1] = { at = socket.gettime(), text = m } end
  until not m and socket.gettime() >= deadline
end

-- The next message (after the last one expected) matching pattern, within
-- timeout s; raises with every message seen when none came.
-- A message matches when its whole text or one of its lines does.
local function matches(text, pattern)
  if text:find(pattern) then return true end
  for line in text:gmatch("[^\n]+") do
    if line:find(pattern) then return true end
  end
  return false
end

function Notify:expect(pattern, timeout)
  local deadline = socket.gettime() + (timeout or 3)
  while true do
    for i = self.pos + 1, #self.msgs do
      if matches(self.msgs[i].text, pattern) then
        self.pos = i
        return self.msgs[i].text
      end
    end
    if socket.gettime() >= deadline then break end
    self:poll(0.05)
  end
  local all = {}
  for i, m in ipairs(self.msgs) do all[#all + 1] = ("%d: %q"):format(i, m.text) end
  error(("no notify message matching %q within %.1fs; got:\n%s"):format(pattern, timeout or 3,
    table.concat(all, "\n")), 2)
end

-- Arrival times of the WATCHDOG=1 messages.
function Notify:pets()
  local t = {}
  for _, m in ipairs(self.msgs) do
    if m.text:find("WATCHDOG=1", 1, true) then t[#t + 1] = m.at end
  end
  return t
end

function Notify:close()
  self.u:close()
  os.remove(self.path)
end

-- The longest gap between pets from the last one before `from` on (s).
local function longest_gap(times, from)
  local gap, last = 0, nil
  for _, t in ipairs(times) do
    if t >= from and last then gap = math.max(gap, t - last) end
    last = t
  end
  return gap
end

local function show_pets(pets, t1)
  local t = {}
  for _, p in ipairs(pets) do t[#t + 1] = ("%.3f"):format(p - t1) end
  return table.concat(t, " ")
end

---------------------------------------------------------------------------
-- systemd-socket-activate
---------------------------------------------------------------------------

-- Run hotsock under systemd-socket-activate with args; it execs hotsock at
-- the first client, so nothing is awaited here.
local function activate(sa_args, hs_args)
  local parts = { "systemd-socket-activate" }
  for _, a in ipairs(sa_args) do parts[#parts + 1] = H.quote(a) end
  parts[#parts + 1] = H.quote(H.bin)
  for _, a in ipairs(hs_args) do parts[#parts + 1] = H.quote(a) end
  local p = H.spawn(table.concat(parts, " "), 30)
  assert(H.wait_until(function() return (H.read_file(p.err) or ""):find("Listening on", 1, true) end, 5),
    "systemd-socket-activate did not listen: " .. (H.read_file(p.err) or ""))
  return p
end

local function err_of(p) return H.read_file(p.err) or "" end

local function wait_err(p, needle, timeout)
  return H.wait_until(function() return err_of(p):find(needle, 1, true) end, timeout or 5)
end

local function proc_status(pid)
  return H.read_file("/proc/" .. pid .. "/status") or ""
end

local function ids(status, what)
  local a, b, c, d = status:match("\n" .. what .. ":%s+(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
  return { tonumber(a), tonumber(b), tonumber(c), tonumber(d) }
end

local function children(pid)
  local t = {}
  for c in (H.read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""):gmatch("%d+") do
    t[#t + 1] = tonumber(c)
  end
  return t
end

describe("systemd", function()
  after_each(H.cleanup)

  describe("socket activation", function()
    if not H.have("systemd-socket-activate") then
      pending("systemd-socket-activate is not installed")
      return
    end

    it("serves the TCP socket it is given instead of binding the script's address", function()
      local port = H.free_port()
      -- The script names the very address systemd holds: binding it would
      -- fail with "address already in use".
      local script = H.write_script((ECHO:gsub('framing = "line",',
        ('listen = "127.0.0.1:%d", framing = "line",'):format(port), 1)))
      local p = activate({ "-l", "127.0.0.1:" .. port }, { "--no-watch", script })
      local c = assert(H.connect_addr("127.0.0.1:" .. port))
      echo_ok(c)
      -- The variables were read and unset: the script and its children do not see them.
      assert.are.equal(NO_VARS, ask(c, "env"))
      c:close()
      local err = err_of(p)
      assert.truthy(err:find("listening on 127.0.0.1:" .. port .. "\n", 1, true), err)
      assert.truthy(err:find("socket activation: serving the 1 socket(s) passed by systemd", 1, true), err)
      assert.is_nil(err:find("address already in use", 1, true), err)
      H.stop_spawned(p)
      assert.truthy(wait_err(p, "info stopped"), err_of(p))
    end)

    it("serves a unix socket it is given instead of -l, and leaves its path alone", function()
      local dir = H.tempdir()
      local path = dir .. "/x.sock"
      local p = activate({ "-l", path }, { "--no-watch", "-l", "127.0.0.1:0", H.write_script(ECHO) })
      local c = assert(H.connect_addr("unix:" .. path))
      echo_ok(c)
      c:close()
      local err = err_of(p)
      assert.truthy(err:find("listening on unix:" .. path .. "\n", 1, true), err)
      assert.is_nil(err:find("listening on 127.0.0.1:", 1, true), err)
      H.stop_spawned(p)
      assert.truthy(wait_err(p, "info stopped"), err_of(p))
      -- systemd's socket: hotsock never unlinks it.
      assert.truthy(H.sh("test -S " .. H.quote(path) .. " && echo yes"):find("yes", 1, true))
    end)

    it("with --workers, every worker serves the socket it is given", function()
      local port = H.free_port()
      local p = activate({ "-l", "127.0.0.1:" .. port },
        { "--no-watch", "--workers", "2", H.write_script(ECHO) })
      local c = assert(H.connect_addr("127.0.0.1:" .. port))
      echo_ok(c)
      assert.truthy(wait_err(p, "supervising 2 workers"), err_of(p))
      local conns = {}
      for i = 1, 8 do
        conns[i] = assert(H.connect_addr("127.0.0.1:" .. port))
        assert.are.equal("n" .. i, ask(conns[i], "n" .. i))
      end
      assert.are.equal(NO_VARS, ask(c, "env"))
      for _, k in ipairs(conns) do k:close() end
      c:close()
      local err = err_of(p)
      local _, n = err:gsub("listening on 127%.0%.0%.1:" .. port .. "\n", "")
      assert.are.equal(1, n, err)
      H.stop_spawned(p)
      assert.truthy(wait_err(p, "Z info stopped"), err_of(p))
    end)

    it("refuses a socket that is not a listening stream socket, with a clear message", function()
      local port = H.free_port()
      local p = activate({ "--datagram", "-l", "127.0.0.1:" .. port },
        { "--no-watch", H.write_script(ECHO) })
      local u = assert(socket.udp())
      assert(u:sendto("wake up", "127.0.0.1", port)) -- the first datagram starts hotsock
      u:close()
      assert.truthy(H.wait_until(function() return H.spawn_exited(p) end, 5), err_of(p))
      local err = err_of(p)
      assert.truthy(err:find("socket activation: fd 3 is a datagram socket, not a listening " ..
        "stream socket", 1, true), err)
      assert.are.equal("1", (H.read_file(p.rcfile) or ""):match("%d+"))
    end)

    it("refuses a descriptor that is not a socket", function()
      local script = H.write_script(ECHO)
      local out, code = H.sh(("LISTEN_FDS=1 timeout 10 sh -c 'LISTEN_PID=$$ exec %s -l 127.0.0.1:0 %s 3</dev/null'")
        :format(H.quote(H.bin), H.quote(script)))
      assert.are.equal(1, code, out)
      assert.truthy(out:find("socket activation: fd 3 is not a socket", 1, true), out)
    end)

    it("ignores (and unsets) sockets meant for another process (LISTEN_PID)", function()
      local srv = H.start(ECHO, { env = { LISTEN_PID = "1", LISTEN_FDS = "1" } })
      local c = srv:connect()
      echo_ok(c)
      assert.are.equal(NO_VARS, ask(c, "env"))
      assert.is_nil(srv:stderr():find("socket activation", 1, true))
    end)
  end)

  describe("sd_notify", function()
    local n
    before_each(function() n = notify_socket() end)
    after_each(function() n:close() end)

    it("READY=1 once listening, STATUS= as clients come, RELOADING=1 and READY=1 around a reload, STOPPING=1", function()
      local srv = H.start(ECHO, { args = { "--no-watch" }, env = { NOTIFY_SOCKET = n.path } })
      local ready = n:expect("^READY=1")
      assert.truthy(ready:find("\nMAINPID=" .. srv.pid .. "\n", 1, true), ready)
      assert.truthy(ready:find("\nSTATUS=serving 0 clients, generation 0", 1, true), ready)
      local c = srv:connect()
      echo_ok(c)
      assert.are.equal(NO_VARS, ask(c, "env"))
      n:expect("^STATUS=serving 1 client, generation 0$", 3)
      -- a reload that works
      srv:signal("HUP")
      local rl = n:expect("^RELOADING=1", 3)
      assert.truthy(rl:match("\nMONOTONIC_USEC=%d+"), rl)
      local done = n:expect("^READY=1", 3)
      assert.truthy(done:find("STATUS=reloaded (SIGHUP): generation 1", 1, true), done)
      n:expect("^STATUS=serving 1 client, generation 1$", 3)
      -- a reload that fails: READY=1 all the same, and the status says so
      local f = assert(io.open(srv.script, "w"))
      f:write("return {")
      f:close()
      srv:signal("HUP")
      n:expect("^RELOADING=1", 3)
      done = n:expect("^READY=1", 3)
      assert.truthy(done:find("STATUS=reload (SIGHUP) failed, generation 1 keeps serving", 1, true), done)
      n:expect("^STATUS=serving 1 client, generation 1 %(the last reload failed%)$", 3)
      echo_ok(c)
      c:close()
      srv:signal("TERM")
      n:expect("^STOPPING=1", 3)
      assert.are.equal(0, srv:stop())
    end)

    it("talks to an abstract socket (@name)", function()
      if not H.have("socat") then
        pending("socat is not installed")
        return
      end
      local name = ("hotsock-spec-%d-%d"):format(math.random(1, 1e9), os.time())
      local p = H.spawn("socat -u ABSTRACT-RECV:" .. name .. " -", 20)
      H.sleep(0.2)
      local srv = H.start(ECHO, { env = { NOTIFY_SOCKET = "@" .. name } })
      assert.truthy(H.wait_until(function()
        return (H.read_file(p.out) or ""):find("READY=1\nMAINPID=" .. srv.pid, 1, true)
      end, 3), H.read_file(p.out))
      assert.are.equal(0, srv:stop())
      H.stop_spawned(p)
    end)

    it("pets the watchdog every WATCHDOG_USEC/2 from the event loop; a stuck loop stops it", function()
      local srv = H.start(ECHO, { args = { "--no-watch", "--handler-budget", "5000" },
        env = { NOTIFY_SOCKET = n.path, WATCHDOG_USEC = "200000" } })
      n:expect("^READY=1")
      local t0 = socket.gettime()
      n:poll(1.0)
      local pets = n:pets()
      assert.truthy(#pets >= 6 and #pets <= 14, ("%d pets in 1 s"):format(#pets))
      assert.truthy(longest_gap(pets, t0) < 0.35, "a gap of " .. longest_gap(pets, t0))
      -- The loop is busy for 1.2 s: no pet meanwhile.
      local c = srv:connect()
      c:settimeout(5)
      local t1 = socket.gettime()
      H.send(c, "spin 1200\n")
      n:poll(1.6)
      assert.are.equal("spun", H.line(c))
      n:poll(0.4)
      pets = n:pets()
      assert.truthy(longest_gap(pets, t1) >= 1.0, "the watchdog was petted while the loop was stuck: " ..
        show_pets(pets, t1))
      assert.truthy(pets[#pets] > t1 + 1.2, "no pet after the loop came back")
      c:close()
      assert.are.equal(0, srv:stop())
    end)

    it("leaves the watchdog alone when WATCHDOG_PID is another process", function()
      local srv = H.start(ECHO, { env = { NOTIFY_SOCKET = n.path, WATCHDOG_USEC = "200000",
        WATCHDOG_PID = "1" } })
      n:expect("^READY=1")
      n:poll(0.6)
      assert.are.equal(0, #n:pets())
      assert.are.equal(0, srv:stop())
    end)

    it("with --workers, the supervisor notifies: READY, STATUS, RELOADING, the watchdog, STOPPING", function()
      local srv = H.start(ECHO, { args = { "--no-watch", "--workers", "2", "--handler-budget", "5000" },
        env = { NOTIFY_SOCKET = n.path, WATCHDOG_USEC = "400000" } })
      local ready = n:expect("^READY=1", 5)
      assert.truthy(ready:find("\nMAINPID=" .. srv.pid .. "\n", 1, true), ready)
      srv:expect_log("supervising 2 workers", 5, true)
      local c = srv:connect()
      echo_ok(c)
      assert.are.equal(NO_VARS, ask(c, "env"))
      n:expect("^STATUS=serving 1 client, generation 0$", 3)
      srv:signal("HUP")
      n:expect("^RELOADING=1\nMONOTONIC_USEC=%d+", 3)
      local done = n:expect("^READY=1", 5)
      assert.truthy(done:find("STATUS=reloaded (SIGHUP) in every worker", 1, true), done)
      n:expect("^STATUS=serving 1 client, generation 1$", 3)
      -- The watchdog, while every worker's loop answers...
      local t0 = socket.gettime()
      n:poll(1.0)
      local pets = n:pets()
      assert.truthy(#pets >= 3, ("%d pets in 1 s"):format(#pets))
      assert.truthy(longest_gap(pets, t0) < 0.6, "a gap of " .. longest_gap(pets, t0))
      -- ... and not while one is stuck.
      local t1 = socket.gettime()
      H.send(c, "spin 1500\n")
      c:settimeout(5)
      n:poll(1.8)
      assert.are.equal("spun", H.line(c))
      n:poll(0.5)
      pets = n:pets()
      assert.truthy(longest_gap(pets, t1) >= 0.9, "petted while a worker was stuck: " ..
        show_pets(pets, t1) .. "\n" .. srv:stderr())
      assert.truthy(pets[#pets] > t1 + 1.5, "no pet after the worker came back")
      srv:expect_log("has not answered for", 1, true)
      c:close()
      srv:signal("TERM")
      n:expect("^STOPPING=1", 3)
      assert.are.equal(0, srv:stop())
    end)
  end)

  describe("--user and --group", function()
    local root = H.sh("id -u"):match("%d+") == "0"

    it("drops to the user after binding, and serves", function()
      if not root then pending("needs root") return end
      local srv = H.start(ECHO, { args = { "--no-watch", "--user", "nobody" } })
      srv:expect_log("running as user nobody (uid 65534), group nogroup (gid 65534)", 3, true)
      local st = proc_status(srv.pid)
      assert.are.same({ 65534, 65534, 65534, 65534 }, ids(st, "Uid"), st)
      assert.are.same({ 65534, 65534, 65534, 65534 }, ids(st, "Gid"), st)
      local groups = st:match("\nGroups:([^\n]*)")
      assert.truthy(groups and not groups:find("%f[%d]0%f[%D]"), "still in group 0: " .. tostring(groups))
      local c = srv:connect()
      echo_ok(c)
      c:close()
      assert.are.equal(0, srv:stop())
    end)

    it("with --group too", function()
      if not root then pending("needs root") return end
      local srv = H.start(ECHO, { args = { "--no-watch", "--user", "nobody", "--group", "daemon" } })
      srv:expect_log("running as user nobody (uid 65534), group daemon (gid 1)", 3, true)
      assert.are.same({ 1, 1, 1, 1 }, ids(proc_status(srv.pid), "Gid"))
      echo_ok(srv:connect())
    end)

    it("with --workers, the supervisor drops before forking: the workers are unprivileged", function()
      if not root then pending("needs root") return end
      -- Each worker loads the script after the drop: nobody must be able to read it.
      local script = H.write_script(ECHO)
      os.execute("chmod 755 " .. H.quote((script:match("^(.*)/[^/]*$"))))
      local srv = H.start(script, { args = { "--no-watch", "--workers", "2", "--user", "nobody" } })
      srv:expect_log("supervising 2 workers", 5, true)
      local c = srv:connect()
      echo_ok(c)
      local kids = children(srv.pid)
      assert.are.equal(2, #kids)
      for _, pid in ipairs({ srv.pid, kids[1], kids[2] }) do
        assert.are.same({ 65534, 65534, 65534, 65534 }, ids(proc_status(pid), "Uid"))
      end
      c:close()
      assert.are.equal(0, srv:stop())
    end)

    it("refuses a user or a group that does not exist (exit 2)", function()
      local script = H.write_script(ECHO)
      local rc, _, err = H.run({ "-l", "127.0.0.1:0", "--user", "no-such-user-hs", script })
      assert.are.equal(2, rc)
      assert.truthy(err:find("--user no-such-user-hs: no such user", 1, true), err)
      rc, _, err = H.run({ "-l", "127.0.0.1:0", "--group", "no-such-group-hs", script })
      assert.are.equal(2, rc)
      assert.truthy(err:find("--group no-such-group-hs: no such group", 1, true), err)
      rc, _, err = H.run({ "--check", "--user", "no-such-user-hs", script })
      assert.are.equal(2, rc, err)
    end)

    it("refuses a change of user when not root (exit 2)", function()
      if not root or not H.have("setpriv") then pending("needs root and setpriv") return end
      local script = H.write_script(ECHO)
      local dir = script:match("^(.*)/[^/]*$")
      os.execute("chmod 755 " .. H.quote(dir))
      local out, code = H.sh(("timeout 10 setpriv --reuid=65534 --regid=65534 --clear-groups %s -l 127.0.0.1:0 --user root %s")
        :format(H.quote(H.bin), H.quote(script)))
      assert.are.equal(2, code, out)
      assert.truthy(out:find("needs root (running as uid 65534", 1, true), out)
    end)
  end)

  describe("the unit files (examples/systemd)", function()
    if not H.have("systemd-analyze") then
      pending("systemd-analyze is not installed")
      return
    end

    -- Copy the units with ExecStart= pointing at the binary under test
    -- (verify checks that it exists); run systemd-analyze verify on them.
    local function verify(extra)
      local dir = H.tempdir()
      for _, name in ipairs({ "hotsock.service", "hotsock.socket" }) do
        local text = assert(H.read_file(H.root .. "/examples/systemd/" .. name), name)
        text = text:gsub("/usr/bin/hotsock", H.bin)
        if extra and extra[name] then text = text .. extra[name] end
        local f = assert(io.open(dir .. "/" .. name, "w"))
        f:write(text)
        f:close()
      end
      -- --man=no: Documentation=man:hotsock(1) names the installed page.
      return H.sh(("cd %s && systemd-analyze verify --man=no ./hotsock.socket ./hotsock.service")
        :format(H.quote(dir)))
    end

    it("verify cleanly: no error, no warning", function()
      local out, code = verify()
      assert.are.equal(0, code, out)
      assert.are.equal("", out)
    end)

    it("the check can fail: a unit with a mistake is reported", function()
      local out = verify({ ["hotsock.service"] = "\n[Service]\nWatchdogSecs=5\n" })
      assert.truthy(out:find("Unknown key", 1, true), out)
      local out2, code2 = verify({ ["hotsock.socket"] = "\n[Socket]\nService=nothere.service\n" })
      assert.truthy(code2 ~= 0 or out2 ~= "", out2)
    end)

    it("are a notify service with a watchdog, a checked reload and a sandbox, and a socket", function()
      local svc = H.read_file(H.root .. "/examples/systemd/hotsock.service")
      local function has(line) assert.truthy(svc:find("\n" .. line, 1, true), "missing: " .. line) end
      has("Type=notify\n")
      has("ExecStart=/usr/bin/hotsock --no-watch ")
      has("ExecReload=/usr/bin/hotsock --check ")
      has("ExecReload=/bin/kill -HUP $MAINPID\n")
      has("WatchdogSec=")
      has("LimitNOFILE=")
      has("NoNewPrivileges=yes\n")
      has("ProtectSystem=strict\n")
      has("ProtectHome=yes\n")
      has("PrivateTmp=yes\n")
      has("DynamicUser=yes\n")
      local sock = H.read_file(H.root .. "/examples/systemd/hotsock.socket")
      assert.truthy(sock:find("\nListenStream=127.0.0.1:7000\n", 1, true), sock)
    end)
  end)
end)
