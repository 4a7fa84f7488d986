package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function closed_ok(err)
  return err == "closed" or err == "connection reset by peer"
end

local SCRIPT = [[
local hs = require "hotsock"
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function log(...) io.stderr:write("@@ ", table.concat({ ... }, " "), "\n") end
return {
  framing = "line",
  max_lua_memory = 64 * 1024 * 1024,
  max_outbuf = 64 * 1024 * 1024,
  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,
  on_message = function(conn, line)
    if line:sub(1, 4) == "log:" then return log("MSG", tostring(conn.id), line:sub(5)) end
    if line == "hex" then
      conn.hexmode = true
    elseif conn.hexmode then
      conn:send(hex(line), "\n")
    elseif line == "closeq" then
      conn:send("closing\n")
      conn:close()
    elseif line == "abortq" then
      conn:send(string.rep(string.rep("a", 1024), 16 * 1024)) -- 16 MiB, 1 KiB at a time
      conn:abort()
    elseif line == "eat" then
      local t = {}
      for i = 1, 1e6 do t[i] = string.rep(string.rep("m", 1024), 1024) .. i end
      conn:send("ate it all\n")
    elseif line == "spin-timer" then
      hs.after(10, function() while true do end end)
      conn:send("armed\n")
    elseif line == "fields" then
      conn:send(tostring(conn.listener), "|", tostring(conn.peer), "|", tostring(conn.local_addr), "\n")
    elseif line == "active" then
      conn:send("active ", tostring(hs.stats().active), "\n")
    else
      conn:send(line, "\n")
    end
  end,
  on_close = function(conn, reason) log("CLOSE", tostring(conn.id), reason) end,
}
]]

local function open(srv, addr)
  local c = srv:connect(addr)
  local l = assert(H.line(c))
  return c, assert(tonumber(l:match("^id (%d+)$")), l)
end

describe("robustness", function()
  local srv
  before_each(function() srv = H.start(SCRIPT) end)
  after_each(H.cleanup)

  it("carries NUL and high bytes through line framing and send", function()
    local c = open(srv)
    H.send(c, "hex\n")
    local s = "a\0b\255\128c\r\0"
    H.send(c, s .. "\n")
    assert.are.equal(H.hex(s), H.line(c))
    H.send(c, "\0\0\0\n")
    assert.are.equal("000000", H.line(c))
  end)

  it("answers 10000 pipelined lines from one write, in order", function()
    local c = open(srv)
    local parts = {}
    for i = 1, 10000 do parts[i] = "p" .. i .. "\n" end
    H.send(c, table.concat(parts))
    local want = table.concat(parts)
    local got = assert(c:receive(#want))
    assert.are.equal(want, got)
  end)

  it("delivers every message sent just before the peer closes, then on_close eof", function()
    local c, id = open(srv)
    H.send(c, "log:one\nlog:two\nlog:three")
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " eof\n", 3, true)
    local text = srv:stderr()
    local a = text:find("@@ MSG " .. id .. " one\n", 1, true)
    local b = text:find("@@ MSG " .. id .. " two\n", 1, true)
    local d = text:find("@@ MSG " .. id .. " three\n", 1, true)
    local e = text:find("@@ CLOSE " .. id .. " eof\n", 1, true)
    assert.truthy(a and b and d, "messages lost:\n" .. text)
    assert.is_true(a < b and b < d and d < e, "messages out of order or after on_close:\n" .. text)
  end)

  it("ignores input that follows close()", function()
    local c, id = open(srv)
    H.send(c, "closeq\nlog:after-close\n")
    assert.are.equal("closing", H.line(c))
    local err = H.read_to_close(c)
    assert.truthy(closed_ok(err), tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " closed\n", 3, true)
    assert.is_nil(srv:stderr():find("after-close", 1, true), "a message was delivered after close()")
  end)

  it("abort() drops the output still queued", function()
    local c, id = open(srv)
    H.send(c, "abortq\n")
    socket.sleep(0.2)
    local data, err = H.read_all(c, nil, 5)
    assert.truthy(closed_ok(err), tostring(err))
    assert.is_true(#data < 16 * 1024 * 1024, "all queued output was sent after abort()")
    srv:expect_log("@@ CLOSE " .. id .. " aborted\n", 3, true)
  end)

  it("survives 300 connect/close cycles and counts no one active afterwards", function()
    for i = 1, 300 do
      local c = H.connect_addr(srv.addrs[1])
      assert(c, "connect " .. i)
      if i % 3 == 0 then
        H.send(c, "x\n")
      elseif i % 3 == 1 then
        c:setoption("linger", { on = true, timeout = 0 })
      end
      c:close()
    end
    local c = open(srv)
    local ok = H.wait_until(function()
      H.send(c, "active\n")
      return H.line(c) == "active 1"
    end, 3, 0.05)
    assert.truthy(ok, "connections still counted active")
  end)

  it("a script over max_lua_memory gets a handler error, not a dead server", function()
    local keep = open(srv)
    local c, id = open(srv)
    H.send(c, "eat\n")
    local err, data = H.read_to_close(c, 10)
    assert.truthy(closed_ok(err), tostring(err))
    assert.are.equal("", data)
    srv:expect_log("@@ CLOSE " .. id .. " handler error\n", 3, true)
    H.send(keep, "alive\n")
    assert.are.equal("alive", H.line(keep))
  end)

  it("a runaway timer callback is stopped by the budget", function()
    local c = open(srv)
    H.send(c, "spin-timer\n")
    assert.are.equal("armed", H.line(c))
    socket.sleep(0.3)
    -- the loop is free again: this client is answered (the helper's receive
    -- timeout bounds the wait)
    H.send(c, "still\n")
    assert.are.equal("still", H.line(c))
  end)

  it("names the listener and the local address on each connection", function()
    local c = open(srv)
    H.send(c, "fields\n")
    local listener, peer, localaddr = H.line(c):match("^([^|]*)|([^|]*)|([^|]*)$")
    assert.are.equal(srv.addrs[1], listener)
    assert.truthy(peer:match("^127%.0%.0%.1:%d+$"), peer)
    assert.are.equal(srv.addrs[1], localaddr)
  end)
end)

describe("listen addresses", function()
  after_each(H.cleanup)

  it("accepts a port number as the module's listen field (on 127.0.0.1)", function()
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, port = probe:getsockname()
    probe:close()
    local srv = H.start(([[
return { listen = %d, framing = "line", on_message = function(c, l) c:send(l, "\n") end }
]]):format(port), { listen = false })
    assert.are.equal("127.0.0.1:" .. port, srv.addrs[1])
    local c = srv:connect()
    H.send(c, "n\n")
    assert.are.equal("n", H.line(c))
  end)

  it("accepts a list of addresses in the module's listen field", function()
    local path = H.tempdir() .. "/l.sock"
    local srv = H.start(([[
return { listen = { "127.0.0.1:0", "unix:%s" }, framing = "line",
  on_message = function(c, l) c:send(c.listener, " ", l, "\n") end }
]]):format(path), { listen = false, expect_listeners = 2 })
    assert.are.equal(2, #srv.addrs)
    assert.are.equal("unix:" .. path, srv.addrs[2])
    local a = srv:connect(srv.addrs[1])
    H.send(a, "tcp\n")
    assert.are.equal(srv.addrs[1] .. " tcp", H.line(a))
    local b = srv:connect(srv.addrs[2])
    H.send(b, "unix\n")
    assert.are.equal(srv.addrs[2] .. " unix", H.line(b))
  end)

  it("':0' listens on all interfaces and is reachable on loopback", function()
    local srv = H.start([[
return { framing = "line", on_message = function(c, l) c:send(l, "\n") end }
]], { listen = ":0" })
    local a = H.parse_addr(srv.addrs[1])
    assert.truthy(a and a.port and a.port > 0, srv.addrs[1])
    local c = assert(H.connect_addr("127.0.0.1:" .. a.port))
    H.send(c, "any\n")
    assert.are.equal("any", H.line(c))
    c:close()
  end)

  it("exits 1 on an address that cannot be parsed or bound", function()
    local script = H.write_script("return { on_message = function() end }\n")
    local rc, _, err = H.run({ "-l", "256.1.1.1:0", script }, { timeout = 5 })
    assert.truthy(rc == 1 or rc == 2, "exit code " .. tostring(rc) .. ": " .. err)
    assert.truthy(err:find("256.1.1.1", 1, true), err)
  end)
end)
