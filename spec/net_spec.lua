package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

-- like examples/echo.lua
local ECHO = [[
return {
  framing = "line",
  on_connect = function(conn) conn:send("hello ", conn.peer, "\n") end,
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]

local function ipv6_available()
  local s = socket.tcp6 and socket.tcp6()
  if not s then return false end
  local ok = s:bind("::1", 0)
  s:close()
  return ok ~= nil
end

describe("networking", function()
  after_each(H.cleanup)

  it("serves IPv6 on [::1]:0", function()
    if not ipv6_available() then
      pending("::1 is not available here")
      return
    end
    local srv = H.start(ECHO, { listen = "[::1]:0" })
    assert.truthy(srv.addrs[1]:match("^%[::1%]:%d+$"), srv.addrs[1])
    local c = srv:connect()
    local _, cport = c:getsockname()
    assert.are.equal("hello [::1]:" .. cport, H.line(c))
    H.send(c, "six\n")
    assert.are.equal("six", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("serves a unix socket", function()
    local path = H.tempdir() .. "/hs.sock"
    local srv = H.start(ECHO, { listen = "unix:" .. path })
    assert.are.equal("unix:" .. path, srv.addrs[1])
    local c = srv:connect()
    local hello = assert(H.line(c))
    assert.truthy(hello:match("^hello "), hello)
    H.send(c, "over unix\n")
    assert.are.equal("over unix", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("serves 200 concurrent clients, each with a line echo round-trip", function()
    local srv = H.start(ECHO)
    local clients = {}
    for i = 1, 200 do
      local c = srv:connect()
      clients[i] = c
    end
    for i, c in ipairs(clients) do
      local _, cport = c:getsockname()
      assert.are.equal("hello 127.0.0.1:" .. cport, H.line(c), "client " .. i)
    end
    for i, c in ipairs(clients) do H.send(c, "msg " .. i .. "\n") end
    for i, c in ipairs(clients) do
      assert.are.equal("msg " .. i, H.line(c), "client " .. i)
    end
    for _, c in ipairs(clients) do c:close() end
    assert.are.equal(0, srv:stop())
  end)

  it("rejects clients over max_clients and keeps serving the others", function()
    local srv = H.start([[
local hs = require "hotsock"
return {
  framing = "line",
  max_clients = 2,
  on_connect = function(conn) conn:send("hi\n") end,
  on_message = function(conn, line)
    if line == "rejected" then
      conn:send("rejected ", tostring(hs.stats().rejected), "\n")
    else
      conn:send(line, "\n")
    end
  end,
}
]])
    local a, b = srv:connect(), srv:connect()
    assert.are.equal("hi", H.line(a))
    assert.are.equal("hi", H.line(b))
    local c = srv:connect()
    local err, data = H.read_to_close(c)
    assert.are.equal("", data)
    assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
    H.send(a, "rejected\n")
    assert.are.equal("rejected 1", H.line(a))
    b:close()
    local ok = H.wait_until(function()
      local d = srv:connect()
      local l = H.line(d)
      d:close()
      return l == "hi"
    end, 3, 0.05)
    assert.truthy(ok, "a slot freed by a closed client was not reused")
  end)

  describe("graceful stop", function()
    local N = 4 * 1024 * 1024
    local SCRIPT = ([[
local hs = require "hotsock"
return {
  framing = "line",
  drain_timeout = %s,
  on_message = function(conn, line)
    if line == "big" then
      conn:send(string.rep("b", %d - 4), "END\n")
      io.stderr:write("@@ BIGSENT ", conn.id, "\n")
    else
      conn:send(line, "\n")
    end
  end,
  on_shutdown = function()
    io.stderr:write("@@ SHUTDOWN\n")
    for c in hs.clients() do c:send("bye\n") end
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]])

    it("on SIGTERM runs on_shutdown, drains queued output, sends EOF and exits 0", function()
      local srv = H.start(SCRIPT:format(5000, N))
      local c = srv:connect()
      H.send(c, "big\n")
      local id = srv:expect_log("@@ BIGSENT (%d+)\n")
      srv:signal("TERM")
      srv:expect_log("@@ SHUTDOWN\n", 3, true)
      -- no longer accepting
      local d = H.connect_addr(srv.addrs[1], 1)
      if d then
        local derr = H.read_to_close(d, 2)
        d:close()
        assert.truthy(derr == "closed" or derr == "connection reset by peer",
          "a new client was served after SIGTERM: " .. tostring(derr))
      end
      local data, err = H.read_all(c, nil, 10)
      assert.are.equal("closed", err)
      assert.are.equal(N + 4, #data)
      assert.are.equal("END\nbye\n", data:sub(-8))
      assert.are.equal(0, srv:wait_exit(8))
      assert.truthy(srv:stderr():find("@@ CLOSE " .. id .. " shutdown\n", 1, true),
        "on_close reason was not 'shutdown':\n" .. srv:stderr():sub(-2000))
      assert.are.equal(0, srv:stop())
    end)

    it("on SIGINT with no clients exits 0 promptly", function()
      local srv = H.start(SCRIPT:format(5000, N))
      srv:signal("INT")
      assert.are.equal(0, srv:wait_exit(3))
      assert.truthy(srv:stderr():find("@@ SHUTDOWN\n", 1, true))
    end)

    it("gives up on a client that does not read after drain_timeout", function()
      local srv = H.start((SCRIPT:format(300, 16 * 1024 * 1024):gsub("framing = \"line\",",
        "framing = \"line\", max_outbuf = 64 * 1024 * 1024,")))
      local c = srv:connect()
      H.send(c, "big\n")
      srv:expect_log("@@ BIGSENT %d+\n")
      local t0 = socket.gettime()
      srv:signal("TERM")
      local rc = srv:wait_exit(5)
      assert.are.equal(0, rc)
      local dt = socket.gettime() - t0
      assert.is_true(dt >= 0.2, "exited after " .. dt .. " s, before drain_timeout = 300 ms")
      c:close()
    end)
  end)
end)
