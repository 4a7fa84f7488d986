package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local SCRIPT = H.root .. "/spec/scripts/events.lua"

-- connect and learn the server-side id of the connection
local function connect(srv)
  local c = srv:connect()
  H.send(c, "fields\n")
  local f = assert(H.line(c))
  local id = assert(tonumber(f:match("^%a+|(%d+)|")), "no id in " .. f)
  return c, id
end

describe("event-style connections", function()
  local srv
  before_each(function() srv = H.start(SCRIPT) end)
  after_each(H.cleanup)

  it("call on_connect, on_message, and on_close with reason eof when the client closes", function()
    local c, id = connect(srv)
    srv:expect_log("@@ CONNECT " .. id .. "\n", 3, true)
    H.send(c, "hello\n")
    assert.are.equal("hello", H.line(c))
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " eof\n", 3, true)
    socket.sleep(0.1)
    assert.are.equal(1, srv:count_log("@@ CLOSE " .. id .. " ", true), "on_close must run exactly once")
  end)

  it("expose id, peer, peer_ip, peer_port and local_addr", function()
    local c = srv:connect()
    local _, cport = c:getsockname()
    H.send(c, "fields\n")
    local f = assert(H.line(c))
    local parts = {}
    for p in (f .. "|"):gmatch("([^|]*)|") do parts[#parts + 1] = p end
    assert.are.equal("integer", parts[1])
    assert.truthy(tonumber(parts[2]))
    assert.are.equal("127.0.0.1:" .. cport, parts[3])
    assert.are.equal("127.0.0.1", parts[4])
    assert.are.equal(tostring(cport), parts[5])
    assert.are.equal("integer", parts[6])
    assert.are.equal("127.0.0.1:" .. srv.port, parts[7])
    assert.are.equal("false", parts[8])
  end)

  it("give each connection a distinct id", function()
    local _, id1 = connect(srv)
    local _, id2 = connect(srv)
    local _, id3 = connect(srv)
    assert.are_not.equal(id1, id2)
    assert.are_not.equal(id2, id3)
    assert.are_not.equal(id1, id3)
  end)

  it("keep fields set by the script across messages, per connection", function()
    local a, b = srv:connect(), srv:connect()
    H.send(a, "set ann\n")
    assert.are.equal("ok", H.line(a))
    H.send(b, "set bob\n")
    assert.are.equal("ok", H.line(b))
    H.send(a, "x\n")
    assert.are.equal("x", H.line(a))
    H.send(a, "get\n")
    assert.are.equal("ann 3", H.line(a))
    H.send(b, "get\n")
    assert.are.equal("bob 2", H.line(b))
  end)

  it("raise when the script sets a read-only field such as conn.id", function()
    local c = srv:connect()
    H.send(c, "setro\n")
    assert.are.equal("false false true true", H.line(c))
  end)

  it("send several strings, or a table of strings, and return true", function()
    local c = srv:connect()
    H.send(c, "multi\n")
    assert.are.equal("abc", H.line(c))
    assert.are.equal("xyz", H.line(c))
    assert.are.equal("true true", H.line(c))
  end)

  it("flush queued output before close() closes", function()
    local c, id = connect(srv)
    local n = 4 * 1024 * 1024
    H.send(c, "bigclose " .. n .. "\n")
    local data, err = H.read_all(c, nil, 10)
    assert.are.equal("closed", err)
    assert.are.equal(n, #data)
    assert.are.equal("END\n", data:sub(-4))
    srv:expect_log("@@ CLOSE " .. id .. " closed\n", 3, true)
  end)

  it("abort() closes at once, after the bytes already flushed", function()
    local c, id = connect(srv)
    H.send(c, "before\n")
    assert.are.equal("before", H.line(c))
    H.send(c, "abort\n")
    local err, rest = H.read_to_close(c)
    assert.are.equal("", rest)
    assert.truthy(err == "closed" or err == "connection reset by peer", "unexpected: " .. tostring(err))
    srv:expect_log("@@ CLOSE " .. id .. " aborted\n", 3, true)
  end)

  it("shutdown() half-closes: the client sees EOF and can still send", function()
    local c, id = connect(srv)
    H.send(c, "half\n")
    assert.are.equal("bye", H.line(c))
    local data, err = c:receive("*l")
    assert.is_nil(data)
    assert.are.equal("closed", err)
    H.send(c, "after\n")
    local ok, r1 = srv:expect_log("@@ AFTERHALF " .. id .. " after (%S+) (%S+)")
    assert.are.equal("returned", ok)
    assert.are.equal("nil", r1, "send after shutdown() should return nil, err")
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " eof\n", 3, true)
  end)

  it("pause() stops delivering messages until resume(), even ones already buffered", function()
    local c = srv:connect()
    local t0 = socket.gettime()
    H.send(c, "pause\nprobe\n")
    assert.are.equal("paused", H.line(c))
    socket.sleep(0.1)
    H.send(c, "probe\n")
    assert.are.equal("probe true", H.line(c))
    assert.are.equal("probe true", H.line(c))
    assert.is_true(socket.gettime() - t0 >= 0.25, "messages were delivered while paused")
  end)

  it("report queued output with buffered()", function()
    local c, id = connect(srv)
    local n = 16 * 1024 * 1024
    H.send(c, "flood " .. n .. "\n")
    local b0, b1, b2 = srv:expect_log("@@ BUFFERED " .. id .. " (%d+) (%d+) (%d+)\n")
    assert.are.equal("0", b0)
    assert.is_true(tonumber(b2) > 0, "buffered() is 0 while the client reads nothing")
    assert.is_true(tonumber(b2) <= n)
    -- now read it all so the connection drains
    local data = assert(c:receive(n))
    assert.are.equal("END\n", data:sub(-4))
  end)

  it("call on_drain once a slow reader has taken the queued output", function()
    local c, id = connect(srv)
    local n = 8 * 1024 * 1024
    H.send(c, "flood " .. n .. "\n")
    socket.sleep(0.3)
    assert.is_nil(srv:stderr():find("@@ DRAIN " .. id .. " ", 1, true), "on_drain before the client read anything")
    -- read slowly at first
    local got = 0
    for _ = 1, 5 do
      local d = assert(c:receive(65536))
      got = got + #d
      socket.sleep(0.01)
    end
    local rest = assert(c:receive(n - got))
    assert.are.equal("END\n", rest:sub(-4))
    assert.are.equal("drained", H.line(c))
    local b = srv:expect_log("@@ DRAIN " .. id .. " (%d+)\n")
    assert.is_true(tonumber(b) <= 16384, "on_drain with " .. b .. " bytes still queued")
  end)

  it("raise 'attempt to use a closed connection' for every method after the script closed it", function()
    local c, id = connect(srv)
    H.send(c, "saveclose\n")
    assert.are.equal("saved", H.line(c))
    srv:expect_log("@@ CLOSE " .. id .. " closed\n", 3, true)
    local closed, results = srv:expect_log("@@ AFTERCLOSE (%S+) (%S+)\n")
    assert.are.equal("true", closed, "conn.closed after close")
    for item in results:gmatch("[^,]+") do
      local name, r = item:match("^([^=]+)=(.*)$")
      assert.are.equal("raised", r, "conn:" .. name .. "() on a closed connection: " .. r)
    end
  end)

  it("return nil and the reason from every method after the peer closed, without raising", function()
    local c, id = connect(srv)
    H.send(c, "save\n")
    assert.are.equal("saved", H.line(c))
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " eof\n", 3, true)
    local closed, results = srv:expect_log("@@ AFTERCLOSE (%S+) (%S+)\n")
    assert.are.equal("true", closed, "conn.closed after close")
    for item in results:gmatch("[^,]+") do
      local name, r = item:match("^([^=]+)=(.*)$")
      assert.are.equal("nil:eof", r, "conn:" .. name .. "() on a connection the peer closed: " .. r)
    end
  end)
end)
