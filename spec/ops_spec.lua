-- spec/ops_spec.lua: running hotsock as a service: control bytes escaped in
-- the log, --log-file and SIGUSR1 (logrotate), the journal's priority
-- prefix, --pid-file, and the open-file limit (docs/operations.md).
-- Loopback only; every process is stopped by its PID.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local LOGGER = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    hs.log.info("got " .. line)
    conn:send("ok\n")
  end,
}
]]

-- Send one line and wait for the answer (so it was logged before).
local function say(srv, text, addr)
  local c = srv:connect(addr)
  H.send(c, text .. "\n")
  assert.are.equal("ok", H.line(c))
  c:close()
end

local function size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Run the binary through `sh -c` (for a ulimit or a stderr of the spec's
-- own), its stderr appended to errfile. Returns the spawned process and the
-- address it listens on.
local function spawn(prefix, args, errfile)
  local parts = { H.quote(H.bin) }
  for _, a in ipairs(args) do parts[#parts + 1] = H.quote(a) end
  local inner = ("%sexec %s 2>>%s"):format(prefix, table.concat(parts, " "), H.quote(errfile))
  local p = H.spawn("sh -c " .. H.quote(inner), 30)
  local addr = H.wait_until(function()
    return (H.read_file(errfile) or ""):match("listening on (%S+)")
  end, 5)
  assert(addr, "no listening line; stderr:\n" .. (H.read_file(errfile) or ""))
  return p, addr
end

local function connect_say(addr, text)
  local c = assert(H.connect_addr(addr))
  H.send(c, text .. "\n")
  assert.are.equal("ok", H.line(c))
  c:close()
end

local function tempdir()
  return (H.write_script("", "unused"):match("^(.*)/[^/]*$"))
end

describe("operations", function()
  after_each(H.cleanup)

  describe("the log", function()
    it("writes a client's control bytes as \\xNN, never raw", function()
      local srv = H.start(LOGGER)
      say(srv, "a\rb\27[31mc")
      srv:expect_log("got a\\x0db\\x1b[31mc", 3, true)
      srv:stop()
      local err = srv:stderr()
      assert.is_nil(err:find("\27", 1, true), "a raw ESC in the log")
      assert.is_nil(err:find("\r", 1, true), "a raw CR in the log")
    end)

    it("writes DEL and other controls escaped, a tab as a space", function()
      local srv = H.start(LOGGER)
      say(srv, "x\1y\127z\tw\0v")
      srv:expect_log("got x\\x01y\\x7fz w\\x00v", 3, true)
    end)
  end)

  describe("--log-file", function()
    it("logs to the file, keeps the listening line on stderr, reopens on SIGUSR1", function()
      local dir = tempdir()
      local path, rotated = dir .. "/hotsock.log", dir .. "/hotsock.log.1"
      local srv = H.start(LOGGER, { args = { "--log-file", path } })
      assert.truthy((H.read_file(path) or ""):find("listening on " .. srv.addrs[1], 1, true))
      say(srv, "first")
      assert.truthy(H.wait_until(function()
        return (H.read_file(path) or ""):find("got first", 1, true)
      end, 3), "no line in the log file")
      assert.is_nil(srv:stderr():find("got first", 1, true), "the line also went to stderr")
      assert.truthy(os.rename(path, rotated))
      srv:signal("USR1")
      assert.truthy(H.wait_until(function()
        return (H.read_file(path) or ""):find("log file reopened", 1, true)
      end, 3), "no new log file after SIGUSR1")
      local old = size(rotated)
      say(srv, "second")
      assert.truthy(H.wait_until(function()
        return (H.read_file(path) or ""):find("got second", 1, true)
      end, 3), "no line in the new log file")
      assert.are.equal(old, size(rotated), "the old file still grows")
      assert.is_nil(H.read_file(rotated):find("got second", 1, true))
      assert.are.equal(0, srv:stop())
      assert.truthy(H.read_file(path):find("stopped", 1, true))
    end)

    it("with --workers, the supervisor reopens its file and every worker's", function()
      local dir = tempdir()
      local path, rotated = dir .. "/w.log", dir .. "/w.log.1"
      local srv = H.start(LOGGER, { args = { "--workers", "2", "--log-file", path } })
      assert.truthy(H.wait_until(function()
        return (H.read_file(path) or ""):find("supervising 2 workers", 1, true)
      end, 5), "no supervisor line in the log file")
      assert.truthy(os.rename(path, rotated))
      srv:signal("USR1")
      assert.truthy(H.wait_until(function()
        local t = H.read_file(path) or ""
        return t:find("worker 1: SIGUSR1: log file reopened", 1, true)
          and t:find("worker 2: SIGUSR1: log file reopened", 1, true)
          and t:find("Z info SIGUSR1: log file reopened", 1, true)
      end, 5), "not every process reopened:\n" .. (H.read_file(path) or ""))
      local old = size(rotated)
      say(srv, "after")
      assert.truthy(H.wait_until(function()
        return (H.read_file(path) or ""):find("got after", 1, true)
      end, 3))
      assert.are.equal(old, size(rotated))
      assert.are.equal(0, srv:stop())
    end)

    it("SIGUSR1 without --log-file does not stop the server", function()
      local srv = H.start(LOGGER)
      srv:signal("USR1")
      say(srv, "still here")
      srv:expect_log("got still here", 3, true)
      assert.is_false(srv:exited())
      assert.are.equal(0, srv:stop())
    end)

    it("a log file that cannot be opened is an error at start (exit 2)", function()
      local script = H.write_script(LOGGER)
      local rc, _, err = H.run({ "-l", "127.0.0.1:0", "--log-file", "/nonexistent-dir/x.log", script })
      assert.are.equal(2, rc)
      assert.truthy(err:find("/nonexistent-dir/x.log", 1, true), err)
    end)
  end)

  describe("the journal", function()
    it("prefixes each line with its syslog priority when stderr is JOURNAL_STREAM", function()
      local dir = tempdir()
      local errfile = dir .. "/journal"
      assert(io.open(errfile, "w")):close()
      local devino = H.sh("stat -c %d:%i " .. H.quote(errfile)):gsub("%s+$", "")
      assert.truthy(devino:match("^%d+:%d+$"), devino)
      local script = H.write_script(LOGGER)
      local p, addr = spawn("JOURNAL_STREAM=" .. devino .. " ",
        { "-l", "127.0.0.1:0", "--log-level", "debug", script }, errfile)
      connect_say(addr, "hi")
      assert.truthy(H.wait_until(function()
        return (H.read_file(errfile) or ""):find("got hi", 1, true)
      end, 3))
      H.stop_spawned(p)
      local text = H.read_file(errfile)
      assert.truthy(text:match("\n?<6>%d%d%d%d%-[^\n]* info listening on "), text)
      assert.truthy(text:match("<6>[^\n]* info conn 1: got hi"), text)
      for line in text:gmatch("[^\n]+") do
        local prio, level = line:match("^<(%d)>%S+ (%a+) ")
        assert.truthy(prio, "no prefix: " .. line)
        assert.are.equal(({ debug = "7", info = "6", warn = "4", error = "3" })[level], prio, line)
      end
    end)

    it("writes no prefix when JOURNAL_STREAM names another file", function()
      local srv = H.start(LOGGER, { env = { JOURNAL_STREAM = "1:1" } })
      say(srv, "plain")
      srv:expect_log("got plain", 3, true)
      assert.is_nil(srv:stderr():find("<6>", 1, true))
      assert.truthy(srv:stderr():match("^%d%d%d%d%-"))
    end)
  end)

  describe("--pid-file", function()
    it("holds the pid while serving and is removed at a clean stop", function()
      local pidf = tempdir() .. "/hotsock.pid"
      local srv = H.start(LOGGER, { args = { "--pid-file", pidf } })
      assert.are.equal(tostring(srv.pid) .. "\n", H.read_file(pidf))
      assert.are.equal(0, srv:stop())
      assert.is_nil(H.read_file(pidf))
    end)

    it("holds the supervisor's pid with --workers", function()
      local pidf = tempdir() .. "/w.pid"
      local srv = H.start(LOGGER, { args = { "--workers", "2", "--pid-file", pidf } })
      srv:expect_log("supervising 2 workers", 5, true)
      assert.are.equal(tostring(srv.pid) .. "\n", H.read_file(pidf))
      say(srv, "x")
      assert.are.equal(0, srv:stop())
      assert.is_nil(H.read_file(pidf))
    end)
  end)

  describe("file descriptors", function()
    local WARN = "max_clients 10000 needs about 10032 file descriptors; the limit is 256 (ulimit -n)"

    it("warns when the hard limit is too low for max_clients", function()
      local srv = H.start(LOGGER, { nofile = 256 }) -- soft and hard
      srv:expect_log(WARN, 3, true)
      say(srv, "fine")
    end)

    it("does not warn when max_clients fits", function()
      local srv = H.start(LOGGER, { nofile = 256, args = { "--max-clients", "200" } })
      say(srv, "fine")
      srv:stop()
      assert.is_nil(srv:stderr():find("file descriptors", 1, true), srv:stderr())
    end)

    it("raises the soft limit to the hard one", function()
      local hard = tonumber((H.sh("ulimit -Hn"):match("%d+")))
      if not hard or hard < 1100 then
        pending("the hard open-file limit here is below 1100")
        return
      end
      local dir = tempdir()
      local errfile, pidf = dir .. "/err", dir .. "/pid"
      local script = H.write_script(LOGGER)
      local p, addr = spawn("ulimit -Sn 256 && ",
        { "-l", "127.0.0.1:0", "--max-clients", "1000", "--pid-file", pidf, script }, errfile)
      connect_say(addr, "up")
      local pid = tonumber((H.read_file(pidf) or ""):match("%d+"))
      assert.truthy(pid, "no pid file")
      local limits = H.read_file("/proc/" .. pid .. "/limits") or ""
      local soft, hd = limits:match("Max open files%s+(%d+)%s+(%d+)")
      H.stop_spawned(p)
      assert.are.equal(hd, soft, limits)
      assert.are.equal(hard, tonumber(hd))
      assert.is_nil(H.read_file(errfile):find("file descriptors", 1, true))
    end)
  end)
end)
