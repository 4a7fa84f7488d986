-- spec/framing2_spec.lua: the protocol workbench's framing additions, against
-- the real binary: a header before a length prefix, varint max_bytes, strict
-- CRLF lines, conn:skip, unknown framing keys, what receive's partial holds,
-- Lua 5.4 format names in receive, and --check in coroutine style.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local HEX = [[
local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
]]

-- An event-style script: every message comes back as hex and a newline; a
-- frame error as "ERR why".
local function echo_script(framing_src, extra)
  return HEX .. ([[
return {
  framing = %s,
  %s
  on_message = function(conn, msg) conn:send(hex(msg), "\n") end,
  on_frame_error = function(conn, why) conn:send("ERR ", why, "\n") end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]):format(framing_src, extra or "")
end

local function frames(c, n)
  local out = {}
  for i = 1, n do
    local l, err = H.line(c)
    assert(l, ("frame %d of %d: %s"):format(i, n, tostring(err)))
    out[i] = l:match("^ERR ") and l or H.unhex(l)
  end
  return out
end

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
local function u16be(n) return string.char(n >> 8 & 255, n & 255) end
local function u16le(n) return string.char(n & 255, n >> 8 & 255) end
local function u32be(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end
local function u32le(n) return string.char(n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24 & 255) end

local function payload(n, seed)
  local t = {}
  for i = 1, n do t[i] = string.char(32 + (i * 7 + (seed or 0)) % 95) end
  return table.concat(t)
end

-- Send the same input whole and one byte at a time to two clients of srv;
-- both must get exactly `want`.
local function both_ways(srv, input, want)
  local whole, bytes = srv:connect(), srv:connect()
  H.send(whole, input)
  assert.are.same(want, frames(whole, #want))
  H.send_bytewise(bytes, input)
  assert.are.same(want, frames(bytes, #want))
  assert.is_true(H.quiet(whole, 0.1), "more frames than expected")
  assert.is_true(H.quiet(bytes, 0.1), "more frames than expected")
end

describe("framing (protocol workbench)", function()
  after_each(H.cleanup)

  describe("a header before the length prefix", function()
    it("delivers an MQTT packet (type byte, varint remaining length) as header and body", function()
      local srv = H.start(echo_script([[{ length = "varint", header = 1 }]]))
      local P200 = payload(200, 1)
      local input = "\x30\x05hello" .. "\xc0\x00" .. "\x10" .. varint(200) .. P200
      both_ways(srv, input, { "\x30hello", "\xc0", "\x10" .. P200 })
    end)

    local FIXED = {
      { "u8", 2, function(n) return string.char(n) end },
      { "u16be", 1, u16be },
      { "u16le", 3, u16le },
      { "u32be", 1, u32be },
      { "u32le", 2, u32le },
    }
    for _, k in ipairs(FIXED) do
      local kind, head, enc = k[1], k[2], k[3]
      it("works with every fixed-width prefix: " .. kind .. " after " .. head .. " header byte(s)", function()
        local srv = H.start(echo_script(([[{ length = %q, header = %d }]]):format(kind, head)))
        local h1, h2 = ("H"):rep(head), ("\n"):rep(head)
        local body = payload(130, 2)
        both_ways(srv, h1 .. enc(3) .. "abc" .. h2 .. enc(0) .. h1 .. enc(130) .. body,
          { h1 .. "abc", h2, h1 .. body })
      end)
    end

    it("counts header and body against max_frame, before the body arrives", function()
      local srv = H.start(echo_script([[{ length = "u8", header = 2 }]], "max_frame = 6,"))
      local c = srv:connect()
      H.send(c, "HH\4abcd")                  -- 2 + 4 = 6: fits
      assert.are.same({ "HHabcd" }, frames(c, 1))
      H.send(c, "HH\5")                      -- 2 + 5 = 7: refused with no body
      assert.are.same({ "ERR frame too large" }, frames(c, 1))
      srv:expect_log("@@ CLOSE %d+ frame too large\n")
    end)

    it("is taken by receive in coroutine style", function()
      local srv = H.start(HEX .. [[
return {
  handle = function(conn)
    while true do
      local m = conn:receive({ length = "u16be", header = 2 })
      if not m then return end
      conn:send(hex(m), "\n")
    end
  end,
}
]])
      local c = srv:connect()
      H.send_bytewise(c, "T1" .. u16be(2) .. "hi" .. "T2" .. u16be(0))
      assert.are.same({ "T1hi", "T2" }, frames(c, 2))
    end)
  end)

  describe("varint prefixes", function()
    it("take up to 10 bytes by default (a padded zero is a zero)", function()
      local srv = H.start(echo_script([[{ length = "varint" }]]))
      both_ways(srv, ("\x80"):rep(9) .. "\x00" .. "\x01z", { "", "z" })
    end)

    it("with max_bytes = 4, a prefix needing a fifth byte is malformed", function()
      local srv = H.start(echo_script([[{ length = "varint", max_bytes = 4, header = 1 }]]))
      local c = srv:connect()
      H.send(c, "\x30\x80\x80\x80\x00" .. "\x30\x01q")  -- 4 bytes: fine
      assert.are.same({ "\x30", "\x30q" }, frames(c, 2))
      H.send(c, "\x30\x80\x80\x80\x80")
      assert.are.same({ "ERR malformed length prefix" }, frames(c, 1))
      srv:expect_log("@@ CLOSE %d+ malformed length prefix\n")
      local d = srv:connect()                 -- the largest 4-byte value is only too large
      H.send(d, "\x30\xff\xff\xff\x7f")
      assert.are.same({ "ERR frame too large" }, frames(d, 1))
    end)
  end)

  describe('"crlf" framing', function()
    it("ends a line only at CRLF: a bare LF or CR is data (SMTP DATA)", function()
      local srv = H.start(echo_script([["crlf"]]))
      both_ways(srv, "DATA\r\nline1\n.\nline2\r\n.\r\n\r\nx\ry\r\n",
        { "DATA", "line1\n.\nline2", ".", "", "x\ry" })
    end)

    it("is accepted by conn:framing and conn:receive", function()
      local srv = H.start(HEX .. [[
return {
  handle = function(conn)
    local a = conn:receive("crlf")
    local b = conn:receive("*l")
    conn:send(hex(a), "\n", hex(b), "\n")
  end,
}
]])
      local c = srv:connect()
      H.send(c, "a\nb\r\nc\n")
      assert.are.same({ "a\nb", "c" }, frames(c, 2))
      local ev = H.start(HEX .. [[
return {
  framing = "line",
  on_message = function(conn, msg)
    conn:send(hex(msg), "\n")
    if msg == "STRICT" then conn:framing("crlf") end
  end,
}
]])
      local e = ev:connect()
      H.send(e, "STRICT\nx\ny\r\n")
      assert.are.same({ "STRICT", "x\ny" }, frames(e, 2))
    end)

    it("does not deliver an unterminated last line when the peer closes", function()
      local srv = H.start(echo_script([["crlf"]]))
      local c = srv:connect()
      H.send(c, "one\r\ntwo\n")
      assert.are.same({ "one" }, frames(c, 1))
      c:shutdown("send")
      local err, data = H.read_to_close(c)
      assert.are.equal("closed", err)
      assert.are.equal("", data)
    end)

    it("applies max_frame to the line without its CRLF", function()
      local srv = H.start(echo_script([["crlf"]], "max_frame = 4,"))
      local c = srv:connect()
      H.send(c, "abcd\r\nabc\nd\r\n")
      assert.are.same({ "abcd", "ERR frame too large" }, frames(c, 2))
    end)
  end)

  describe("conn:skip(n)", function()
    -- A memcached-like server: every "set k n" is refused with
    -- SERVER_ERROR and its n bytes of data and CRLF are skipped.
    local MEMCACHED = HEX .. [[
local hs = require "hotsock"
return {
  framing = "line",
  max_frame = 64,
  max_inbuf = 4096,
  on_message = function(conn, line)
    local n = line:match("^set %S+ %d+ %d+ (%d+)$")
    if n then
      conn:send("SERVER_ERROR object too large for cache\r\n")
      assert(conn:skip(tonumber(n) + 2) == true)
      return
    end
    if line == "stats" then return conn:send("bytes_in ", hs.stats().bytes_in, "\r\n") end
    conn:send("LINE ", hex(line), "\r\n")
  end,
  on_close = function(conn, reason) io.stderr:write("@@ CLOSE ", conn.id, " ", reason, "\n") end,
}
]]
    -- a value over max_frame and max_inbuf, full of line ends
    local VALUE = ("x\n"):rep(50000)

    it("drops data already buffered and arriving later, over max_frame and max_inbuf", function()
      local srv = H.start(MEMCACHED)
      local c = srv:connect()
      H.send(c, "set k 0 0 " .. #VALUE .. "\r\n" .. VALUE .. "\r\nget k\r\n")
      assert.are.equal("SERVER_ERROR object too large for cache", H.line(c))
      assert.are.equal("LINE " .. H.hex("get k"), H.line(c))
      -- the same with the data sent after the answer, in pieces
      H.send(c, "set k 0 0 " .. #VALUE .. "\r\n")
      assert.are.equal("SERVER_ERROR object too large for cache", H.line(c))
      for i = 1, #VALUE, 7001 do H.send(c, VALUE:sub(i, i + 7000)) end
      H.send(c, "\r\nget j\r\n")
      assert.are.equal("LINE " .. H.hex("get j"), H.line(c))
      assert.is_true(H.quiet(c, 0.1))
      assert.are.equal(0, srv:count_log("@@ CLOSE"))
    end)

    it("drops data sent one byte at a time", function()
      local srv = H.start(MEMCACHED)
      local c = srv:connect()
      H.send_bytewise(c, "set k 0 0 5\r\nab\ncd\r\nget k\r\n")
      assert.are.equal("SERVER_ERROR object too large for cache", H.line(c))
      assert.are.equal("LINE " .. H.hex("get k"), H.line(c))
      assert.is_true(H.quiet(c, 0.1))
    end)

    it("works in coroutine style, and skip(0) does nothing", function()
      local srv = H.start(HEX .. [[
return {
  handle = function(conn)
    while true do
      local l = conn:receive("*l")
      if not l then return end
      local n = l:match("^skip (%d+)$")
      if n then conn:skip(tonumber(n)) else conn:send(hex(l), "\n") end
    end
  end,
}
]])
      local c = srv:connect()
      H.send(c, "skip 4\nabc\nd\nskip 0\n")
      socket.sleep(0.05)
      H.send(c, "skip 3\n")
      socket.sleep(0.05)
      H.send_bytewise(c, "xy\nz\n")
      assert.are.same({ "d", "z" }, frames(c, 2))
    end)

    it("refuses a bad count, and returns nil, 'frame error' from on_frame_error", function()
      local srv = H.start([[
return {
  framing = "line",
  max_frame = 8,
  on_message = function(conn, msg)
    local ok, err = pcall(conn.skip, conn, tonumber(msg) or msg)
    conn:send(tostring(ok), " ", ok and "" or err:match("non%-negative integer") or err, "\n")
  end,
  on_frame_error = function(conn, why)
    local ok, err = conn:skip(100)
    conn:send(tostring(ok), " ", tostring(err), "\n")
  end,
}
]])
      local c = srv:connect()
      H.send(c, "-1\nabc\n1.5\n")
      assert.are.equal("false non-negative integer", H.line(c))
      assert.are.equal("false non-negative integer", H.line(c))
      assert.are.equal("false non-negative integer", H.line(c))
      H.send(c, "0123456789\n")
      assert.are.equal("nil frame error", H.line(c))
      local err = H.read_to_close(c)
      assert.are.equal("closed", err)
    end)

    it("called outside a handler, frames what is left at once", function()
      local srv = H.start(echo_script([[{ length = "u8" }]], [[
  on_connect = function(conn)
    require("hotsock").after(200, function() conn:skip(1) end)
  end,]]))
      local c = srv:connect()
      H.send(c, "\9\2hi")       -- a prefix of 9 would wait; skipped, "\2hi" is a frame
      assert.are.same({ "hi" }, frames(c, 1))
    end)

    it("is bounded by the frame timeout like a message", function()
      local src = MEMCACHED:gsub("max_inbuf = 4096,", "max_inbuf = 4096, timeouts = { frame = 300 },")
      local srv = H.start(src)
      local c = srv:connect()
      H.send(c, "set k 0 0 100\r\n0123456789")
      assert.are.equal("SERVER_ERROR object too large for cache", H.line(c))
      srv:expect_log("@@ CLOSE %d+ frame timeout\n", 3)
    end)
  end)

  describe("unknown keys in a framing table", function()
    it("fail --check, naming the key and the allowed ones", function()
      local rc, out, err = H.run({ "--check", H.write_script([[
return { framing = { length = "varint", ofset = 1 }, on_message = function() end }
]]) }, { timeout = 5 })
      assert.are.equal(2, rc, out .. err)
      assert.truthy(err:find('unknown framing key "ofset"', 1, true), err)
      assert.truthy(err:find("delimiter, length, exact, header, max_bytes", 1, true), err)
    end)

    it("fail header and max_bytes where they do not apply", function()
      for _, spec in ipairs({ [[{ delimiter = "\n", header = 1 }]], [[{ length = "u16be", max_bytes = 2 }]],
                              [[{ length = "varint", max_bytes = 11 }]], [[{ length = "u8", header = -1 }]] }) do
        local rc, out, err = H.run({ "--check", H.write_script(
          "return { framing = " .. spec .. ", on_message = function() end }\n") }, { timeout = 5 })
        assert.are.equal(2, rc, spec .. ": " .. out .. err)
        assert.truthy(err:find("framing: ", 1, true), err)
      end
    end)

    it("raise in conn:framing and conn:receive", function()
      local srv = H.start([[
return {
  handle = function(conn)
    local ok, err = pcall(conn.receive, conn, { length = "u8", ofset = 1 })
    conn:send(tostring(ok), " ", err, "\n")
    ok, err = pcall(conn.framing, conn, { delimiter = "x", [1] = true })
    conn:send(tostring(ok), " ", err, "\n")
  end,
}
]])
      local c = srv:connect()
      local a, b = H.line(c), H.line(c)
      assert.truthy(a:find('^false .*receive: unknown framing key "ofset"'), a)
      assert.truthy(b:find("^false .*framing: unknown framing key %[1%]"), b)
    end)
  end)

  describe("receive's partial", function()
    -- The coroutine reads a mode line; "late" sleeps first so that what the
    -- client sends next is buffered when receive runs, "wait" is in receive
    -- before it arrives. It then reports one receive's results.
    local PARTIAL = HEX .. [[
local hs = require "hotsock"
return {
  max_frame = 16,
  handle = function(conn)
    local mode, spec = conn:receive("*l"):match("^(%a+) ?(.*)$")
    if spec == "varint" then spec = { length = "varint" } else spec = "*l" end
    if mode == "late" then hs.sleep(300) end
    if mode == "timeout" then conn:settimeouts({ read = 200 }) end
    local m, err, partial = conn:receive(spec)
    conn:send(m and "MSG" or "FAIL", " ", tostring(err), " ", hex(partial or ""), "\n")
  end,
}
]]
    local function try(mode, input, how)
      local srv = H.start(PARTIAL)
      local c = srv:connect()
      H.send(c, mode .. "\n")
      socket.sleep(0.1)
      if how == "bytewise" then H.send_bytewise(c, input) else H.send(c, input) end
      return H.line(c)
    end

    it("is empty after a frame too large, however it arrived", function()
      local line = ("z"):rep(21) .. "\n"
      for _, mode in ipairs({ "wait", "late" }) do
        for _, how in ipairs({ "whole", "bytewise" }) do
          assert.are.equal("FAIL frame too large ", try(mode, line, how), mode .. " " .. how)
        end
      end
    end)

    it("is empty after a malformed frame", function()
      for _, mode in ipairs({ "wait varint", "late varint" }) do
        assert.are.equal("FAIL malformed length prefix ", try(mode, ("\x80"):rep(11)), mode)
      end
    end)

    it("holds the unframed bytes when the peer closes or a timeout fires", function()
      for _, mode in ipairs({ "wait", "late" }) do
        local srv = H.start(PARTIAL)
        local c = srv:connect()
        H.send(c, mode .. "\n")
        H.send(c, "half a li")
        c:shutdown("send")
        assert.are.equal("FAIL closed " .. H.hex("half a li"), H.line(c), mode)
      end
      assert.are.equal("FAIL timeout " .. H.hex("abc"), try("timeout", "abc"))
    end)
  end)

  describe("receive with Lua 5.4 format names", function()
    it('takes "l", "L" (the line with its end kept) and "a"', function()
      local srv = H.start(HEX .. [[
return {
  handle = function(conn)
    local a = conn:receive("l")
    local b = conn:receive("L")
    local c = conn:receive("L")
    local d = conn:receive("a")
    conn:send(hex(a), "\n", hex(b), "\n", hex(c), "\n", hex(d), "\n")
  end,
}
]])
      local c = srv:connect()
      H.send(c, "one\r\ntwo\r\nthree\nrest\nof it")
      c:shutdown("send")
      assert.are.same({ "one", "two\r\n", "three\n", "rest\nof it" }, frames(c, 4))
    end)
  end)

  describe("--check", function()
    it("reports no framing for a coroutine-style script", function()
      local rc, out = H.run({ "--check", H.write_script("return { framing = 'line', handle = function() end }\n") },
        { timeout = 5 })
      assert.are.equal(0, rc)
      assert.truthy(out:find("OK (coroutine style)\n", 1, true), out)
      assert.falsy(out:find("framing", 1, true), out)
    end)

    it("reports a length framing's header and max_bytes", function()
      local rc, out = H.run({ "--check", H.write_script(
        "return { framing = { length = 'varint', header = 1, max_bytes = 4 }, on_message = function() end }\n") },
        { timeout = 5 })
      assert.are.equal(0, rc)
      assert.truthy(out:find("OK (event style, framing length varint header 1 max_bytes 4)", 1, true), out)
    end)
  end)
end)
