-- lua/hotsock/resp.lua on its own: encoders, the request decoder (RESP
-- arrays and inline commands, in pieces of any size, limits, malformed
-- input) and the reply decoder.
package.path = "lua/?.lua;" .. package.path
local resp = require "hotsock.resp"

-- Feed `s` in pieces of `step` bytes (1 = byte by byte); return every
-- command decoded, and the decoder.
local function decode_all(s, step, opts)
  local d = resp.decoder(opts)
  local got = {}
  step = step or #s
  for i = 1, #s, step do
    d:feed(s:sub(i, i + step - 1))
    for argv in d:commands() do got[#got + 1] = argv end
  end
  return got, d
end

describe("hotsock.resp encoders", function()
  it("encodes the five RESP2 types", function()
    assert.are.equal("+OK\r\n", resp.simple("OK"))
    assert.are.equal("-ERR bad\r\n", resp.error("ERR bad"))
    assert.are.equal(":42\r\n", resp.integer(42))
    assert.are.equal(":-7\r\n", resp.integer(-7))
    assert.are.equal(":3\r\n", resp.integer(3.0))
    assert.are.equal("$5\r\nhello\r\n", resp.bulk("hello"))
    assert.are.equal("$0\r\n\r\n", resp.bulk(""))
    assert.are.equal("$-1\r\n", resp.bulk(nil))
    assert.are.equal("$-1\r\n", resp.bulk(resp.null))
    assert.are.equal("*-1\r\n", resp.array(nil))
    assert.are.equal("*0\r\n", resp.array({}))
  end)

  it("keeps binary data and CRLF inside bulk strings", function()
    local s = "a\r\nb\0c"
    assert.are.equal("$6\r\n" .. s .. "\r\n", resp.bulk(s))
  end)

  it("gives a bulk string as pieces: header, the same string, CRLF", function()
    local big = ("v"):rep(70000)
    local h, s, crlf = resp.bulk_parts(big)
    assert.are.equal("$70000\r\n", h)
    assert.is_true(rawequal(big, s))
    assert.are.equal("\r\n", crlf)
    assert.are.equal(resp.bulk("hi"), table.concat({ resp.bulk_parts("hi") }))
    assert.are.equal(resp.bulk(""), table.concat({ resp.bulk_parts("") }))
    assert.are.equal(resp.bulk(12), table.concat({ resp.bulk_parts(12) }))
    assert.are.equal(1, select("#", resp.bulk_parts(nil)))
    assert.are.equal("$-1\r\n", resp.bulk_parts(nil))
    assert.are.equal("$-1\r\n", resp.bulk_parts(resp.null))
    assert.are.equal("$5\r\n", resp.bulk_head(5))
    assert.are.equal("$1048576\r\n", resp.bulk_head(1048576))
  end)

  it("refuses CR or LF in simple strings and errors, and non-integers", function()
    assert.has_error(function() resp.simple("a\r\nb") end)
    assert.has_error(function() resp.error("a\nb") end)
    assert.has_error(function() resp.integer(1.5) end)
  end)

  it("encodes nested arrays of mixed values", function()
    local s = resp.array({ "a", 1, { "x", resp.null, { ok = "OK" } }, { err = "ERR e" } })
    assert.are.equal("*4\r\n$1\r\na\r\n:1\r\n*3\r\n$1\r\nx\r\n$-1\r\n+OK\r\n-ERR e\r\n", s)
    assert.are.equal(s, resp.encode({ "a", 1, { "x", resp.null, { ok = "OK" } }, { err = "ERR e" } }))
    -- n covers trailing nils
    assert.are.equal("*2\r\n$1\r\na\r\n$-1\r\n", resp.array({ "a", n = 2 }))
  end)

  it("builds requests as arrays of bulk strings", function()
    assert.are.equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n10\r\n", resp.command("SET", "k", 10))
  end)
end)

describe("hotsock.resp request decoder", function()
  local stream = resp.command("SET", "key", "va\r\nlue") ..
                 "PING\r\n" ..
                 resp.command("GET", "key") ..
                 "set a \"b c\\x41\\n\" 'it\\'s'\r\n" ..
                 "\r\n" ..                               -- empty inline line: skipped
                 "*0\r\n" ..                             -- empty array: skipped
                 resp.command("ECHO", "")
  local want = {
    { "SET", "key", "va\r\nlue" },
    { "PING" },
    { "GET", "key" },
    { "set", "a", "b cA\n", "it's" },
    { "ECHO", "" },
  }

  it("decodes arrays and inline commands in one piece", function()
    local got, d = decode_all(stream)
    assert.are.same(want, got)
    assert.is_nil(d.err)
    assert.are.equal(0, d:pending())
  end)

  it("decodes the same stream fed byte by byte and in odd pieces", function()
    for _, step in ipairs({ 1, 2, 3, 5, 7, 13 }) do
      local got, d = decode_all(stream, step)
      assert.are.same(want, got, "step " .. step)
      assert.is_nil(d.err)
    end
  end)

  it("returns nothing until a command is complete", function()
    local d = resp.decoder()
    d:feed("*2\r\n$4\r\nECHO\r\n$3\r\nab")
    assert.is_nil(d:next())
    assert.is_nil(d.err)
    d:feed("c\r")
    assert.is_nil(d:next())
    d:feed("\n")
    assert.are.same({ "ECHO", "abc" }, d:next())
    assert.is_nil(d:next())
  end)

  it("gathers a large bulk arriving in many pieces", function()
    local big = ("0123456789"):rep(100000) -- 1 MB
    local s = resp.command("SET", "k", big) .. resp.command("GET", "k")
    local got = decode_all(s, 4096)
    assert.are.equal(2, #got)
    assert.are.equal(big, got[1][3])
    assert.are.same({ "GET", "k" }, got[2])
    -- and byte by byte through the header, then in pieces
    local d = resp.decoder()
    local head = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" .. #big .. "\r\n"
    for i = 1, #head do d:feed(head:sub(i, i)) assert.is_nil(d:next()) end
    for i = 1, #big, 65536 do d:feed(big:sub(i, i + 65535)) assert.is_nil(d:next()) end
    d:feed("\r")
    assert.is_nil(d:next())
    d:feed("\n")
    local argv = d:next()
    assert.are.equal(big, argv[3])
  end)

  it("handles many pipelined commands in one piece", function()
    local parts = {}
    for i = 1, 1000 do parts[i] = resp.command("INCR", "n" .. i) end
    local got = decode_all(table.concat(parts))
    assert.are.equal(1000, #got)
    assert.are.same({ "INCR", "n1000" }, got[1000])
  end)

  it("splits inline commands on runs of spaces and tabs", function()
    local got = decode_all("  GET\t  k  \n")
    assert.are.same({ { "GET", "k" } }, got)
    got = decode_all('ECHO ""\n')
    assert.are.same({ { "ECHO", "" } }, got)
  end)

  local function proto_error(s, opts, step)
    local got, d = decode_all(s, step, opts)
    return d.err, got
  end

  it("reports malformed arrays as protocol errors", function()
    assert.matches("invalid multibulk length", proto_error("*x\r\n"))
    assert.matches("invalid multibulk length", proto_error("*1.5\r\n"))
    assert.matches("expected '%$', got 'x'", proto_error("*1\r\nx3\r\nabc\r\n"))
    assert.matches("invalid bulk length", proto_error("*1\r\n$-3\r\n"))
    assert.matches("invalid bulk length", proto_error("*1\r\n$abc\r\n"))
    assert.matches("not terminated by CRLF", proto_error("*1\r\n$3\r\nabcde\r\n"))
    assert.matches("unbalanced quotes", proto_error('SET a "b\r\n'))
    assert.matches("unbalanced quotes", proto_error('SET a "b"c\r\n'))
    assert.matches("unbalanced quotes", proto_error("SET a 'b\r\n"))
  end)

  it("reports the same errors when fed byte by byte", function()
    assert.matches("expected '%$'", proto_error("*1\r\nx3\r\nabc\r\n", nil, 1))
    assert.matches("not terminated by CRLF", proto_error("*1\r\n$3\r\nabcde\r\n", nil, 1))
  end)

  it("keeps the commands before an error and ignores input after it", function()
    local err, got = proto_error("PING\r\n*1\r\n$x\r\nPING\r\n")
    assert.matches("invalid bulk length", err)
    assert.are.same({ { "PING" } }, got)
    local d = resp.decoder()
    d:feed("*z\r\n")
    assert.is_nil(d:next())
    d:feed("PING\r\n")
    local v, e = d:next()
    assert.is_nil(v)
    assert.matches("Protocol error", e)
  end)

  it("enforces max_args, max_bulk and max_inline", function()
    assert.matches("invalid multibulk length", proto_error("*11\r\n", { max_args = 10 }))
    assert.are.equal(nil, (proto_error(resp.command(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), { max_args = 10 })))
    assert.matches("invalid bulk length", proto_error("*1\r\n$101\r\n", { max_bulk = 100 }))
    assert.are.equal(nil, (proto_error(resp.command(("x"):rep(100)), { max_bulk = 100 })))
    -- an inline line over the limit, with or without its newline yet
    assert.matches("too big inline request", proto_error(("a"):rep(200), { max_inline = 100 }))
    assert.matches("too big inline request", proto_error(("a"):rep(200) .. "\n", { max_inline = 100 }))
    assert.matches("too big inline request", proto_error(("a"):rep(200), { max_inline = 100 }, 1))
    -- an array header that never ends
    assert.matches("too big mbulk count", proto_error("*" .. ("1"):rep(200), { max_inline = 100 }))
    -- a bulk length line that never ends
    assert.matches("invalid bulk length", proto_error("*1\r\n$" .. ("9"):rep(40)))
  end)
end)

describe("hotsock.resp reply decoder", function()
  it("decodes every RESP2 type, nested, byte by byte", function()
    local s = "+OK\r\n-ERR no\r\n:12\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+s\r\n*0\r\n"
    for _, step in ipairs({ #s, 1, 4 }) do
      local d = resp.reply_decoder()
      local got = {}
      for i = 1, #s, step do
        d:feed(s:sub(i, i + step - 1))
        for v in d:values() do got[#got + 1] = v end
      end
      assert.is_nil(d.err)
      assert.are.equal(8, #got)
      assert.are.equal("OK", got[1])
      assert.is_true(resp.is_error(got[2]))
      assert.are.equal("ERR no", got[2].err)
      assert.are.equal(12, got[3])
      assert.are.equal("a\r\n", got[4])
      assert.are.equal(resp.null, got[5])
      assert.are.equal(resp.null, got[6])
      assert.are.same({ 1, { "x", resp.null }, "s" }, got[7])
      assert.are.same({}, got[8])
    end
  end)

  it("round-trips encode and decode", function()
    local v = { "a", 1, { "b", { "c", -5 } }, "" }
    local got, pos = resp.decode(resp.encode(v))
    assert.are.same(v, got)
    assert.are.equal(#resp.encode(v) + 1, pos)
  end)

  it("reports malformed replies", function()
    local _, err = resp.decode("?what\r\n")
    assert.matches("unexpected byte", err)
    _, err = resp.decode(":1x\r\n")
    assert.matches("invalid integer", err)
    assert.is_nil((resp.decode("$5\r\nab")))     -- incomplete, no error
    _, err = resp.decode("$2\r\nabcd\r\n")
    assert.matches("not terminated", err)
  end)
end)
