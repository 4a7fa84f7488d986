package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

-- A script that answers every framed message with its hex and a newline.
local function echo_hex_script(framing_src, extra)
  return ([[
local hs = require "hotsock"
local function hex(s) return (s:gsub(".", function(c) return ("%%02x"):format(c:byte()) end)) end
return {
  framing = %s,
  %s
  on_message = function(conn, msg)
    if msg == "STATS" then
      local s = hs.stats()
      conn:send("STATS ", tostring(s.oversize_frames), "\n")
      return
    end
    conn:send(hex(msg), "\n")
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]):format(framing_src, extra or "")
end

-- read n frames (hex lines) and decode them
local function frames(c, n)
  local out = {}
  for i = 1, n do
    local l, err = H.line(c)
    assert(l, ("frame %d of %d: %s"):format(i, n, tostring(err)))
    out[i] = H.unhex(l)
  end
  return out
end

local function u16be(n) return string.char(n >> 8 & 255, n & 255) end
local function u16le(n) return string.char(n & 255, n >> 8 & 255) end
local function u32be(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end
local function u32le(n) return string.char(n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24 & 255) end
local function varint(n)
  local out = {}
  repeat
    local b = n & 127
    n = n >> 7
    if n > 0 then b = b | 128 end
    out[#out + 1] = string.char(b)
  until n == 0
  return table.concat(out)
end

local function payload(n, seed)
  local t = {}
  for i = 1, n do t[i] = string.char(32 + (i * 7 + (seed or 0)) % 95) end
  return table.concat(t)
end

local P300 = payload(300, 1)
local P260 = payload(260, 2)
local P200 = payload(200, 3)

-- name, framing (Lua source), input, expected frames
local CASES = {
  { "line", [["line"]], "alpha\r\nbeta\ngam\rma\r\n\nlast\n",
    { "alpha", "beta", "gam\rma", "", "last" } },
  { "delimiter \\r\\n\\r\\n", [[{ delimiter = "\r\n\r\n" }]],
    "GET / HTTP/1.1\r\nHost: x\r\n\r\nsecond\r\n\r\n\r\nthird\r\n\r\n",
    { "GET / HTTP/1.1\r\nHost: x", "second", "\r\nthird" } },
  { "length u8", [[{ length = "u8" }]], "\5hello\0\3abc" .. "\200" .. P200,
    { "hello", "", "abc", P200 } },
  { "length u16be", [[{ length = "u16be" }]], u16be(5) .. "hello" .. u16be(260) .. P260,
    { "hello", P260 } },
  { "length u16le", [[{ length = "u16le" }]], u16le(5) .. "hello" .. u16le(260) .. P260,
    { "hello", P260 } },
  { "length u32be", [[{ length = "u32be" }]], u32be(3) .. "abc" .. u32be(300) .. P300,
    { "abc", P300 } },
  { "length u32le", [[{ length = "u32le" }]], u32le(3) .. "abc" .. u32le(300) .. P300,
    { "abc", P300 } },
  { "length varint", [[{ length = "varint" }]], varint(5) .. "hello" .. varint(300) .. P300 .. varint(1) .. "z",
    { "hello", P300, "z" } },
  { "exact 4", [[{ exact = 4 }]], "abcdefghijkl", { "abcd", "efgh", "ijkl" } },
}

describe("framing", function()
  after_each(H.cleanup)

  for _, case in ipairs(CASES) do
    local name, spec, input, expected = case[1], case[2], case[3], case[4]

    it(name .. " cuts frames when the input arrives one byte at a time", function()
      local srv = H.start(echo_hex_script(spec))
      local c = srv:connect()
      H.send_bytewise(c, input)
      assert.are.same(expected, frames(c, #expected))
      assert.is_true(H.quiet(c, 0.1), "more frames than expected")
    end)

    it(name .. " cuts frames when they all arrive in one write", function()
      local srv = H.start(echo_hex_script(spec))
      local c = srv:connect()
      H.send(c, input)
      assert.are.same(expected, frames(c, #expected))
      assert.is_true(H.quiet(c, 0.1), "more frames than expected")
    end)
  end

  it("raw delivers every byte, whatever the read sizes", function()
    local srv = H.start(echo_hex_script([["raw"]]))
    local c = srv:connect()
    local input = payload(120, 5)
    H.send_bytewise(c, input:sub(1, 60))
    H.send(c, input:sub(61))
    local got = {}
    local total = 0
    local deadline = socket.gettime() + 5
    while total < #input and socket.gettime() < deadline do
      local l = assert(H.line(c))
      local f = H.unhex(l)
      assert.is_true(#f > 0, "empty raw frame")
      got[#got + 1] = f
      total = total + #f
    end
    assert.are.equal(input, table.concat(got))
  end)

  it("is the default raw framing when the script names none", function()
    local srv = H.start([[
return { on_message = function(conn, msg) conn:send("<", msg, ">") end }
]])
    local c = srv:connect()
    H.send(c, "abc\n")
    assert.are.equal("<abc\n>", c:receive(6))
  end)

  it("delivers an unterminated last line when the peer closes mid-line", function()
    local srv = H.start(echo_hex_script([["line"]]))
    local c = srv:connect()
    H.send(c, "one\ntwo")
    assert.are.same({ "one" }, frames(c, 1))
    c:shutdown("send")
    assert.are.same({ "two" }, frames(c, 1))
  end)

  describe("conn:framing()", function()
    local SWITCH = [[
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
return {
  framing = "line",
  on_message = function(conn, msg)
    if conn.mode == "body" then
      conn.mode = nil
      conn:framing("line")
      conn:send("BODY ", hex(msg), "\n")
      return
    end
    local n = msg:match("^LEN (%d+)$")
    if n then
      conn.mode = "body"
      conn:framing({ exact = tonumber(n) })
      conn:send("HEAD ", n, "\n")
      return
    end
    local m = msg:match("^U8$")
    if m then
      conn.mode = "body"
      conn:framing({ length = "u8" })
      conn:send("HEAD u8\n")
      return
    end
    conn:send("LINE ", hex(msg), "\n")
  end,
}
]]
    it("re-frames bytes already buffered, in the same write as the line", function()
      local srv = H.start(SWITCH)
      local c = srv:connect()
      H.send(c, "LEN 5\r\nhe\nlonext\n")
      assert.are.equal("HEAD 5", H.line(c))
      assert.are.equal("BODY " .. H.hex("he\nlo"), H.line(c))
      assert.are.equal("LINE " .. H.hex("next"), H.line(c))
    end)

    it("switches to a length prefix and back with everything in one write", function()
      local srv = H.start(SWITCH)
      local c = srv:connect()
      H.send(c, "U8\n\4a\nbcLEN 2\nxyz\n")
      assert.are.equal("HEAD u8", H.line(c))
      assert.are.equal("BODY " .. H.hex("a\nbc"), H.line(c))
      assert.are.equal("HEAD 2", H.line(c))
      assert.are.equal("BODY " .. H.hex("xy"), H.line(c))
      assert.are.equal("LINE " .. H.hex("z"), H.line(c))
    end)

    it("works when the body arrives later, byte by byte", function()
      local srv = H.start(SWITCH)
      local c = srv:connect()
      H.send(c, "LEN 3\n")
      assert.are.equal("HEAD 3", H.line(c))
      H.send_bytewise(c, "abcdef\n")
      assert.are.equal("BODY " .. H.hex("abc"), H.line(c))
      assert.are.equal("LINE " .. H.hex("def"), H.line(c))
    end)
  end)

  describe("max_frame", function()
    it("closes only the client whose line is too long, with 'frame too large'", function()
      local srv = H.start(echo_hex_script([["line"]], "max_frame = 16,"))
      local good, bad = srv:connect(), srv:connect()
      H.send(good, "short\n")
      assert.are.same({ "short" }, frames(good, 1))
      H.send(bad, "ok\n")
      assert.are.same({ "ok" }, frames(bad, 1))
      H.send(bad, string.rep("z", 100))          -- no newline: certain already
      local err, data = H.read_to_close(bad)
      assert.are.equal("", data)
      assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
      srv:expect_log("@@ CLOSE %d+ frame too large\n")
      H.send(good, "again\n")
      assert.are.same({ "again" }, frames(good, 1))
      H.send(good, "STATS\n")
      assert.are.equal("STATS 1", H.line(good))
    end)

    it("closes on a length prefix over the cap before the body arrives", function()
      local srv = H.start(echo_hex_script([[{ length = "u16be" }]], "max_frame = 16,"))
      local good, bad = srv:connect(), srv:connect()
      H.send(bad, u16be(1000))
      local err = H.read_to_close(bad)
      assert.truthy(err == "closed" or err == "connection reset by peer", tostring(err))
      srv:expect_log("@@ CLOSE %d+ frame too large\n")
      H.send(good, u16be(3) .. "abc")
      assert.are.same({ "abc" }, frames(good, 1))
    end)

    it("accepts a frame of exactly max_frame bytes", function()
      local srv = H.start(echo_hex_script([["line"]], "max_frame = 16,"))
      local c = srv:connect()
      H.send(c, string.rep("q", 16) .. "\n")
      assert.are.same({ string.rep("q", 16) }, frames(c, 1))
    end)
  end)
end)
