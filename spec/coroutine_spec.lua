package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local SCRIPT = H.root .. "/spec/scripts/coro.lua"

local function open(srv, mode)
  local c = srv:connect()
  local l = assert(H.line(c))
  local id = assert(tonumber(l:match("^id (%d+)$")), "bad greeting " .. l)
  if mode then H.send(c, mode .. "\n") end
  return c, id
end

describe("coroutine-style handle(conn)", function()
  local srv
  before_each(function() srv = H.start(SCRIPT) end)
  after_each(H.cleanup)

  it("receives lines with receive('*l'), CR LF stripped", function()
    local c = open(srv, "lines")
    H.send(c, "one\r\ntwo\nthree\n")
    assert.are.equal("line:" .. H.hex("one"), H.line(c))
    assert.are.equal("line:" .. H.hex("two"), H.line(c))
    assert.are.equal("line:" .. H.hex("three"), H.line(c))
  end)

  it("receives lines sent one byte at a time", function()
    local c = open(srv)
    H.send_bytewise(c, "lines\nab\ncd\n")
    assert.are.equal("line:" .. H.hex("ab"), H.line(c))
    assert.are.equal("line:" .. H.hex("cd"), H.line(c))
  end)

  it("receives exactly n bytes with receive(n), from bytes already buffered", function()
    local c = open(srv)
    H.send(c, "n\n5\nhello3\nab\n")
    assert.are.equal("got:hello", H.line(c))
    assert.are.equal("got:ab\n", c:receive(7))
  end)

  it("receives exactly n bytes arriving in pieces", function()
    local c = open(srv, "n")
    H.send(c, "6\nabc")
    socket.sleep(0.05)
    H.send(c, "def")
    assert.are.equal("got:abcdef", H.line(c))
  end)

  it("receives everything until the peer closes with receive('*a')", function()
    local c = open(srv, "all")
    H.send(c, "first part\n")
    socket.sleep(0.05)
    H.send(c, "second part")
    c:shutdown("send")
    local want = "first part\nsecond part"
    assert.are.equal("all:" .. #want .. ":" .. H.hex(want), H.line(c))
    local err = H.read_to_close(c)
    assert.are.equal("closed", err)
  end)

  it("receives up to a delimiter with receive{delimiter=}", function()
    local c = open(srv, "delim")
    H.send(c, "ab||c")
    H.send_bytewise(c, "d|||")
    H.send(c, "x||")
    assert.are.equal("d:ab", H.line(c))
    assert.are.equal("d:cd", H.line(c))
    assert.are.equal("d:|x", H.line(c))
  end)

  it("receives length-prefixed messages with receive{length=}", function()
    local c = open(srv, "len")
    H.send(c, "\0\3abc\0\0\0\5")
    H.send_bytewise(c, "hello")
    assert.are.equal("l:abc", H.line(c))
    assert.are.equal("l:", H.line(c))
    assert.are.equal("l:hello", H.line(c))
  end)

  it("returns nil, 'closed', partial when the peer closes mid-line", function()
    local c, id = open(srv, "lines")
    H.send(c, "done\npart")
    assert.are.equal("line:" .. H.hex("done"), H.line(c))
    c:close()
    local err, partial = srv:expect_log("@@ PARTIAL " .. id .. " (%S+) %[(%x*)%]\n")
    assert.are.equal("closed", err)
    assert.are.equal("part", H.unhex(partial))
  end)

  it("returns nil, 'closed', partial when the peer closes inside receive(n)", function()
    local c, id = open(srv, "n")
    H.send(c, "10\nabcd")
    socket.sleep(0.05)
    c:close()
    local err, partial = srv:expect_log("@@ NPARTIAL " .. id .. " (%S+) %[(%x*)%]\n")
    assert.are.equal("closed", err)
    assert.are.equal("abcd", H.unhex(partial))
  end)

  it("can hs.sleep inside handle without blocking other clients", function()
    local slow = open(srv, "long")
    assert.are.equal("s", H.line(slow))
    local c = open(srv, "sleep")
    local t0 = socket.gettime()
    assert.are.equal("a", H.line(c))
    assert.are.equal("b true", H.line(c))
    local dt = socket.gettime() - t0
    assert.is_true(dt >= 0.15, "hs.sleep(200) returned after " .. dt .. " s")
    assert.are.equal("late", H.line(slow))
  end)

  it("hs.sleep returns nil, 'closed' when the server closes the connection meanwhile", function()
    local c, id = open(srv, "sleepclose")
    assert.are.equal("sleeping", H.line(c))
    local r, e = srv:expect_log("@@ SLEPT " .. id .. " (%S+) (%S+)\n")
    assert.are.equal("nil", r)
    assert.are.equal("closed", e)
    assert.is_nil(H.line(c)) -- and the client sees the close
  end)

  it("a peer hang-up during hs.sleep is seen by the next receive", function()
    local c, id = open(srv, "sleeppeer")
    assert.are.equal("sleeping", H.line(c))
    c:close()
    local r, e, l, e2 = srv:expect_log("@@ SLEPTPEER " .. id .. " (%S+) (%S+) (%S+) (%S+)\n")
    assert.are.equal("true", r)
    assert.are.equal("nil", e)
    assert.are.equal("nil", l)
    assert.are.equal("closed", e2)
  end)

  it("closes the connection after flushing its output when handle returns", function()
    local c, id = open(srv, "big")
    local n = 2 * 1024 * 1024
    H.send(c, n .. "\n")
    local data, err = H.read_all(c, nil, 10)
    assert.are.equal("closed", err)
    assert.are.equal(n, #data)
    assert.are.equal("END\n", data:sub(-4))
    srv:expect_log("@@ CLOSE " .. id .. " closed\n", 3, true)
    socket.sleep(0.05)
    assert.are.equal(1, srv:count_log("@@ CLOSE " .. id .. " ", true), "on_close must run exactly once")
  end)

  it("runs on_close once when the peer closes while handle waits", function()
    local c, id = open(srv, "lines")
    c:close()
    srv:expect_log("@@ CLOSE " .. id .. " ", 3, true)
    socket.sleep(0.05)
    assert.are.equal(1, srv:count_log("@@ CLOSE " .. id .. " ", true))
  end)

  it("no frame timeout once lines that arrived together were all received", function()
    local quiet = H.start([[
local hs = require "hotsock"
return {
  timeouts = { frame = 300 },
  handle = function(conn)
    while true do
      local line, err = conn:receive("*l")
      if not line then conn:send("error ", err, "\n") return end
      hs.sleep(50) -- busy: the next line waits in the buffer
      conn:send("got ", line, "\n")
    end
  end,
}
]])
    local c = quiet:connect()
    H.send(c, "a\nb\n")
    assert.are.equal("got a", H.line(c))
    assert.are.equal("got b", H.line(c))
    socket.sleep(0.6) -- twice the frame timeout with nothing pending
    H.send(c, "c\n")
    assert.are.equal("got c", H.line(c))
  end)
end)
