package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

describe("hs.connect", function()
  local DIAL = [[
local hs = require "hotsock"
local port = tonumber(arg[1])
return {
handle = function(conn)
  local what = conn:receive("*l")
  local p = what == "refused" and tonumber(arg[2]) or port
  local up, err = hs.connect("127.0.0.1", p)
  if not up then
    conn:send("connect failed ", tostring(err), "\n")
    return
  end
  up:send("hello upstream\n")
  local r, e = up:receive("*l")
  conn:send("upstream said ", tostring(r), " ", tostring(e), "\n")
  up:close()
end,
}
]]

  it("dials out from a coroutine and talks over the outbound connection", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    local srv = H.start(DIAL, { script_args = { tostring(lport), "1" } })
    local c = srv:connect()
    H.send(c, "go\n")
    local up = lsrv:accept()
    lsrv:close()
    assert.truthy(up, "hotsock did not connect out")
    up:settimeout(3)
    assert.are.equal("hello upstream", up:receive("*l"))
    H.send(up, "pong\n")
    assert.are.equal("upstream said pong nil", H.line(c))
    local err = H.read_to_close(up)
    assert.are.equal("closed", err)
    up:close()
  end)

  it("returns nil, err when the connection is refused", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, dead = probe:getsockname()
    probe:close()
    local srv = H.start(DIAL, { script_args = { "1", tostring(dead) } })
    local c = srv:connect()
    H.send(c, "refused\n")
    local l = assert(H.line(c))
    assert.truthy(l:match("^connect failed %S"), l)
  end)

  it("counts connects and failures in hs.stats", function()
    local srv = H.start([[
local hs = require "hotsock"
return {
  handle = function(conn)
    local port = tonumber(conn:receive("*l"))
    local up, err = hs.connect("127.0.0.1", port)
    if up then up:close() end
    local s = hs.stats()
    conn:send(tostring(up ~= nil), " ", tostring(err), " ", s.connects, " ", s.connect_failed,
              " ", s.accepted, " ", s.active, "\n")
  end,
}
]])
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    local _, lport = lsrv:getsockname()
    local c = srv:connect()
    H.send(c, lport .. "\n")
    assert.are.equal("true nil 1 0 1 1", H.line(c))
    lsrv:close()
    c = srv:connect()
    H.send(c, lport .. "\n")
    local l = H.line(c)
    assert.truthy(l:match("^false %S.* 1 1 2 1$"), l)
  end)

  it("in event style returns the connection at once and calls the handlers given", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    local srv = H.start(([[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local up = hs.connect("127.0.0.1", %d, {
      framing = "line",
      on_connect = function(up) up:send("from ", conn.id, ": ", line, "\n") end,
      on_message = function(up, reply)
        conn:send("upstream: ", reply, " outbound=", tostring(up.outbound),
                  " listener=", tostring(up.listener), "\n")
        up:close()
      end,
      on_close = function(up, reason) io.stderr:write("@@ UPCLOSE ", reason, "\n") end,
    })
    -- sends before the connection is up are queued
    up:send("queued early\n")
    conn.up = up
  end,
}
]]):format(lport))
    local c = srv:connect()
    H.send(c, "hi\n")
    local up = assert(lsrv:accept())
    up:settimeout(3)
    assert.are.equal("queued early", up:receive("*l"))
    assert.truthy(up:receive("*l"):match("^from %d+: hi$"))
    H.send(up, "pong\n")
    assert.are.equal("upstream: pong outbound=true listener=nil", H.line(c))
    srv:expect_log("@@ UPCLOSE closed\n")
    assert.are.equal("closed", H.read_to_close(up))
    up:close()
    lsrv:close()
  end)

  it("reports a refused connect to the event-style on_close", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, dead = probe:getsockname()
    probe:close()
    local srv = H.start(([[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    hs.connect("127.0.0.1", %d, {
      on_close = function(up, reason) conn:send("up closed: ", reason, "\n") end,
    })
  end,
}
]]):format(dead))
    local c = srv:connect()
    H.send(c, "go\n")
    assert.are.equal("up closed: connection refused", H.line(c))
  end)

  it("gives up with 'connect timeout' when the peer never answers", function()
    -- A listener with a full accept queue drops further SYNs: the connect
    -- hangs until hotsock's own timeout.
    local lsrv = assert(socket.tcp())
    assert(lsrv:bind("127.0.0.1", 0))
    assert(lsrv:listen(0))
    local _, lport = lsrv:getsockname()
    local fillers = {}
    for i = 1, 4 do
      local f = socket.tcp()
      f:settimeout(0)
      f:connect("127.0.0.1", lport)
      fillers[i] = f
    end
    socket.sleep(0.1)
    local srv = H.start(([[
local hs = require "hotsock"
return {
  handle = function(conn)
    conn:receive("*l")
    local up, err = hs.connect("127.0.0.1", %d, { timeout = 200 })
    conn:send(tostring(up), " ", tostring(err), "\n")
  end,
}
]]):format(lport))
    local c = srv:connect()
    H.send(c, "go\n")
    assert.are.equal("nil connect timeout", H.line(c))
    for _, f in ipairs(fillers) do f:close() end
    lsrv:close()
  end)

  it("resolves a host name", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    local srv = H.start(([[
local hs = require "hotsock"
return {
  handle = function(conn)
    conn:receive("*l")
    local up, err = hs.connect("localhost", %d)
    if not up then return conn:send("failed ", err, "\n") end
    up:send("via name\n")
    conn:send(up:receive("*l"), "\n")
  end,
}
]]):format(lport))
    local c = srv:connect()
    H.send(c, "go\n")
    local up = assert(lsrv:accept())
    up:settimeout(3)
    assert.are.equal("via name", up:receive("*l"))
    H.send(up, "ok\n")
    assert.are.equal("ok", H.line(c))
    up:close()
    lsrv:close()
  end)

  it("closes the outbound connections of a coroutine when its client goes", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    lsrv:settimeout(3)
    local _, lport = lsrv:getsockname()
    local srv = H.start(([[
local hs = require "hotsock"
return {
  handle = function(conn)
    local up = assert(hs.connect("127.0.0.1", %d))
    conn:send("connected\n")
    local l, err = conn:receive("*l") -- the client hangs up here
    io.stderr:write("@@ CLIENT ", tostring(err), "\n")
  end,
}
]]):format(lport))
    local c = srv:connect()
    local up = assert(lsrv:accept())
    up:settimeout(3)
    assert.are.equal("connected", H.line(c))
    c:close()
    srv:expect_log("@@ CLIENT closed\n")
    assert.are.equal("closed", H.read_to_close(up))
    up:close()
    lsrv:close()
  end)

  it("cannot receive on an outbound connection from another client's coroutine", function()
    local lsrv = assert(socket.bind("127.0.0.1", 0))
    local _, lport = lsrv:getsockname()
    local srv = H.start(([[
local hs = require "hotsock"
local shared
return {
  handle = function(conn)
    local l = conn:receive("*l")
    if l == "make" then
      shared = assert(hs.connect("127.0.0.1", %d))
      conn:send("made\n")
      conn:receive("*l")
    else
      local ok, err = pcall(shared.receive, shared, "*l")
      conn:send(tostring(ok), " ", tostring(err):match("receive works only") or err, "\n")
    end
  end,
}
]]):format(lport))
    local a = srv:connect()
    H.send(a, "make\n")
    assert.are.equal("made", H.line(a))
    local b = srv:connect()
    H.send(b, "steal\n")
    assert.are.equal("false receive works only", H.line(b))
    lsrv:close()
  end)
end)
