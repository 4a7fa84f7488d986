-- lua/hotsock/redis.lua: the reply parser on its own (no server), then the
-- client inside hotsock scripts against a real redis-server (started here
-- on a free loopback port with persistence off, stopped by PID) and
-- against fake servers written in this file.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
package.path = H.root .. "/lua/?.lua;" .. package.path
local redis = require "hotsock.redis"
local resp = require "hotsock.resp"
local WB = require "hotsock.workbench"
local socket = require "socket"

local ENV = { HOTSOCK_LUA_PATH = H.root .. "/lua/?.lua" }

local have = H.have

local sh = H.sh

local free_port = H.free_port

-- redis-cli against port: its output without the final newline.
local function cli(port, ...)
  local parts = { "timeout 10 redis-cli -h 127.0.0.1 -p", tostring(port) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.quote(a) end
  return (sh(table.concat(parts, " ")):gsub("\n$", ""))
end

-- A deterministic text form of a decoded value, for comparisons: the
-- same function in this file and in the scripts (PRELUDE), from one source.
local SHOW_SRC = [==[
local redis = ...
local function show(v)
  if v == nil then return "nil" end
  if v == redis.null then return "null" end
  local t = type(v)
  if t == "number" then
    if math.type(v) == "float" then
      if v ~= v then return "nan" end
      return ("%.17g"):format(v) .. "f"
    end
    return tostring(v)
  end
  if t ~= "table" then return tostring(v) end
  if redis.is_error(v) then return "err(" .. v.err .. ")" end
  -- a list, or a pipeline's results (a list with its length in n)
  local n = 0
  for k in pairs(v) do if not (k == "n" and v.n == #v) then n = n + 1 end end
  local out = {}
  if n == #v then
    for i = 1, #v do out[i] = show(v[i]) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  for k, x in pairs(v) do out[#out + 1] = show(k) .. "=" .. show(x) end
  table.sort(out)
  return "{" .. table.concat(out, ",") .. "}"
end
return show
]==]
local show = assert(load(SHOW_SRC))(redis)

-- The same, for scripts: defines show(v) and out(conn, ...).
local PRELUDE = [[
local hs = require "hotsock"
local redis = require "hotsock.redis"
local port = tonumber(arg[1])
local show = assert(load(]] .. ("%q"):format(SHOW_SRC) .. [[))(redis)
local function out(conn, ...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = show(t[i]) end
  conn:send(table.concat(t, " ", 1, t.n), "\n")
end
]]

local function start(body, port, opts)
  opts = opts or {}
  opts.script_args = { tostring(port) }
  opts.env = ENV
  return H.start(PRELUDE .. body, opts)
end

-- Read n lines from c.
local function lines(c, n)
  local t = {}
  for i = 1, n do
    local l, err = H.line(c)
    if not l then error(("line %d of %d: %s (got so far: %s)"):format(i, n, err, table.concat(t, " | ")), 2) end
    t[i] = l
  end
  return t
end

---------------------------------------------------------------------------
-- the parser alone
---------------------------------------------------------------------------

-- Every value (as show() writes it) the decoder yields when fed `pieces`
-- one after another; or nil, err.
local function decode_pieces(pieces, opts)
  local d = redis.decoder(opts)
  local got = {}
  for _, piece in ipairs(pieces) do
    d:feed(piece)
    while true do
      local v, p = d:next()
      if v == nil then
        if p then return nil, p end
        break
      end
      got[#got + 1] = show(v) .. (p and " (push)" or "")
    end
  end
  return got, d
end

describe("hotsock.redis reply parser", function()
  -- one of every kind, RESP2 and RESP3, with the form show() gives it
  local CASES = {
    { "+OK\r\n", "OK" },
    { "+\r\n", "" },
    { "-ERR unknown command\r\n", "err(ERR unknown command)" },
    { ":42\r\n", "42" },
    { ":-9223372036854775808\r\n", "-9223372036854775808" },
    { "$5\r\nhello\r\n", "hello" },
    { "$0\r\n\r\n", "" },
    { "$8\r\na\r\nb\0c\r\n\r\n", "a\r\nb\0c\r\n" },
    { "$-1\r\n", "null" },
    { "*-1\r\n", "null" },
    { "*0\r\n", "[]" },
    { "*3\r\n:1\r\n$-1\r\n+x\r\n", "[1,null,x]" },
    { "*2\r\n*1\r\n:1\r\n*2\r\n-ERR a\r\n$1\r\nb\r\n", "[[1],[err(ERR a),b]]" },
    { "_\r\n", "null" },
    { ",1.5\r\n", "1.5f" },
    { ",3\r\n", "3f" },
    { ",-2.5e3\r\n", "-2500f" },
    { ",inf\r\n", "inff" },
    { ",-inf\r\n", "-inff" },
    { ",nan\r\n", "nan" },
    { "#t\r\n", "true" },
    { "#f\r\n", "false" },
    { "(3492890328409238509324850943850943825024385\r\n", "3492890328409238509324850943850943825024385" },
    { "=15\r\ntxt:Some string\r\n", "Some string" },
    { "!21\r\nSYNTAX invalid syntax\r\n", "err(SYNTAX invalid syntax)" },
    { "%2\r\n+first\r\n:1\r\n+second\r\n_\r\n", "{first=1,second=null}" },
    { "%0\r\n", "[]" },
    { "~3\r\n+a\r\n+b\r\n+a\r\n", "{a=true,b=true}" },
    { "~1\r\n,nan\r\n", "{nan=true}" },
    { ">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n", "[message,chan,hi] (push)" },
    { "|1\r\n+ttl\r\n:3600\r\n:7\r\n", "7" },                        -- attribute dropped
    { "*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n", "[1,2]" },              -- inside an array
    { "%1\r\n*2\r\n:1\r\n:2\r\n~1\r\n#t\r\n", "{[1,2]={true=true}}" }, -- aggregate keys
  }

  it("decodes every RESP2 and RESP3 type", function()
    for _, case in ipairs(CASES) do
      local got, err = decode_pieces({ case[1] })
      assert.is_table(got, err)
      assert.are.same({ case[2] }, got, ("%q"):format(case[1]))
    end
  end)

  it("gives the same values for a stream cut at every byte", function()
    local stream, want = {}, {}
    for i, case in ipairs(CASES) do
      stream[i] = case[1]
      want[i] = case[2]
    end
    stream = table.concat(stream)
    -- the whole stream at once, one byte at a time, and cut in two at
    -- every position
    assert.are.same(want, (decode_pieces({ stream })))
    local bytes = {}
    for i = 1, #stream do bytes[i] = stream:sub(i, i) end
    assert.are.same(want, (decode_pieces(bytes)))
    for cut = 0, #stream do
      local got = decode_pieces({ stream:sub(1, cut), stream:sub(cut + 1) })
      assert.are.same(want, got, "cut at byte " .. cut)
    end
    -- and each value alone, cut at each of its bytes and one at a time
    for _, case in ipairs(CASES) do
      local s = case[1]
      for cut = 1, #s - 1 do
        local d = redis.decoder()
        d:feed(s:sub(1, cut))
        assert.is_nil(d:next(), ("%q complete after %d bytes"):format(s, cut))
        d:feed(s:sub(cut + 1))
        local v, p = d:next()
        assert.are.equal(case[2], show(v) .. (p and " (push)" or ""))
        assert.is_nil(d:next())
      end
    end
  end)

  it("gathers a large bulk string arriving in pieces", function()
    local value = {}
    for i = 1, 20000 do value[i] = string.char(i % 256) end
    value = table.concat(value) .. "\r\n" .. table.concat(value)
    local wire = "*2\r\n$" .. #value .. "\r\n" .. value .. "\r\n:5\r\n+after\r\n"
    for _, size in ipairs({ 1, 7, 1000, 4096, 16384, 65536 }) do
      local d = redis.decoder()
      local got = {}
      for i = 1, #wire, size do
        d:feed(wire:sub(i, i + size - 1))
        while true do
          local v = d:next()
          if v == nil then break end
          got[#got + 1] = v
        end
      end
      assert.are.equal(2, #got, "piece size " .. size)
      assert.are.equal(value, got[1][1])
      assert.are.equal(5, got[1][2])
      assert.are.equal("after", got[2])
    end
  end)

  it("refuses a reply larger than max_reply, at once when the header says so", function()
    local d = redis.decoder{ max_reply = 100 }
    d:feed("$1000\r\n")
    local v, err = d:next()
    assert.is_nil(v)
    assert.are.equal("reply too large (max_reply 100 bytes)", err)
    -- a count that cannot fit
    d = redis.decoder{ max_reply = 100 }
    d:feed("*1000\r\n")
    assert.are.equal("reply too large (max_reply 100 bytes)", select(2, d:next()))
    -- many small elements that add up, fed in pieces
    d = redis.decoder{ max_reply = 100 }
    d:feed("*30\r\n")
    local err2
    for _ = 1, 30 do
      d:feed(":12345\r\n")
      local x, e = d:next()
      assert.is_nil(x)
      if e then err2 = e break end
    end
    assert.are.equal("reply too large (max_reply 100 bytes)", err2)
    -- replies that fit are taken one after another
    d = redis.decoder{ max_reply = 100 }
    for _ = 1, 50 do d:feed("$50\r\n" .. ("x"):rep(50) .. "\r\n") end
    for _ = 1, 50 do assert.are.equal(("x"):rep(50), d:next()) end
    -- a simple string with no end
    d = redis.decoder{ max_reply = 100 }
    d:feed("+" .. ("y"):rep(200))
    assert.truthy(select(2, d:next()))
  end)

  it("stops for good at a protocol error", function()
    for _, bad in ipairs({ "?x\r\n", ":12a\r\n", "$3\r\nabcd\r\n", "$-2\r\n", "*x\r\n",
                           "#x\r\n", ",1.2.3.4z\r\n", "_x\r\n", "$?\r\n", "*?\r\n",
                           "(12x\r\n", "=2\r\nab\r\n", ":99999999999999999999\r\n" }) do
      local d = redis.decoder()
      d:feed(bad)
      local v, err = d:next()
      assert.is_nil(v)
      assert.truthy(err and err:match("^protocol error: "), ("%q: %s"):format(bad, tostring(err)))
      d:feed("+OK\r\n")
      assert.are.equal(err, select(2, d:next()))
    end
    -- nesting deeper than max_depth
    local d = redis.decoder{ max_depth = 8 }
    d:feed(("*1\r\n"):rep(9) .. ":1\r\n")
    assert.are.equal("protocol error: nesting too deep", select(2, d:next()))
    d = redis.decoder{ max_depth = 8 }
    d:feed(("*1\r\n"):rep(8) .. ":1\r\n")
    assert.are.equal("[[[[[[[[1]]]]]]]]", show((d:next())))
  end)

  it("parses a whole string with redis.parse", function()
    local t = assert(redis.parse("+a\r\n:1\r\n$2\r\nx"))
    assert.are.equal(2, t.n)
    assert.are.equal("a", t[1])
    assert.are.equal(1, t[2])
    assert.are.equal(5, t.rest)
    assert.is_nil((redis.parse("?\r\n")))
  end)
end)

---------------------------------------------------------------------------
-- fake servers: exactly what goes over the wire
---------------------------------------------------------------------------

describe("hotsock.redis on the wire (a fake server)", function()
  after_each(H.cleanup)

  local function listener()
    local l = assert(socket.bind("127.0.0.1", 0))
    l:settimeout(5)
    local _, p = l:getsockname()
    return l, tonumber(p)
  end

  -- Read exactly the bytes `want` from s (the client must have sent them
  -- all before any reply: that is what pipelining means).
  local function expect_bytes(s, want)
    local got, err, partial = s:receive(#want)
    assert.are.equal(want, got or partial, err)
  end

  it("sends a pipeline in one go and reads replies cut at every byte", function()
    local l, lport = listener()
    local srv = start([[
return {
  handle = function(conn)
    conn:receive("*l")
    local r = assert(redis.connect{ port = port })
    local res, err = r:pipeline(function(p)
      p:set("k", "v 1")
      p:incr("n")
      p:get("missing")
      p:call("hgetall", "h")
      p:lpush("l", 1.5, 7.0)
    end)
    out(conn, res and res.n, res, err)
    out(conn, r:get("k"))
  end,
}
]], lport)
    local c = srv:connect()
    H.send(c, "go\n")
    local up = assert(l:accept())
    up:settimeout(5)
    expect_bytes(up, resp.command("SET", "k", "v 1") .. resp.command("INCR", "n")
      .. resp.command("GET", "missing") .. resp.command("HGETALL", "h")
      .. resp.command("LPUSH", "l", "1.5", "7"))
    H.send_bytewise(up, "+OK\r\n:1\r\n$-1\r\n*4\r\n$1\r\nf\r\n$1\r\nv\r\n$1\r\ng\r\n$0\r\n\r\n"
      .. "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert.are.equal(
      "5 [OK,1,null,[f,v,g,],err(WRONGTYPE Operation against a key holding the wrong kind of value)] nil",
      H.line(c))
    expect_bytes(up, resp.command("GET", "k"))
    H.send_bytewise(up, "$3\r\nv 1\r\n")
    assert.are.equal("v 1", H.line(c))
    up:close()
    l:close()
  end)

  it("takes RESP3 replies cut at every byte, with push messages between them", function()
    local l, lport = listener()
    local srv = start([[
return {
  handle = function(conn)
    conn:receive("*l")
    local pushes = {}
    local r = assert(redis.connect{ port = port, protocol = 3,
      on_push = function(m) pushes[#pushes + 1] = show(m) end })
    out(conn, r:call("X"))
    out(conn, r:call("Y"))
    out(conn, table.concat(pushes, " "))
  end,
}
]], lport)
    local c = srv:connect()
    H.send(c, "go\n")
    local up = assert(l:accept())
    up:settimeout(5)
    expect_bytes(up, resp.command("HELLO", "3"))
    H.send_bytewise(up, "%1\r\n+proto\r\n:3\r\n")
    expect_bytes(up, resp.command("X"))
    H.send_bytewise(up, ">2\r\n+invalidate\r\n*1\r\n+k\r\n"
      .. "%3\r\n+d\r\n,2.5\r\n+s\r\n~2\r\n+a\r\n+b\r\n+v\r\n=7\r\ntxt:abc\r\n")
    assert.are.equal("{d=2.5f,s={a=true,b=true},v=abc}", H.line(c))
    expect_bytes(up, resp.command("Y"))
    H.send_bytewise(up, "|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.5\r\n"
      .. "*4\r\n#t\r\n_\r\n(12345678901234567890123\r\n>2\r\n+x\r\n+y\r\n")
    -- a push inside an array is an element, not a message
    assert.are.equal("[true,null,12345678901234567890123,[x,y]]", H.line(c))
    assert.are.equal("[invalidate,[k]]", H.line(c))
    up:close()
    l:close()
  end)

  it("drops the connection on a reply over max_reply or a protocol error, then reconnects", function()
    local l, lport = listener()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port, max_reply = 64 })
    out(conn, r:get("a"))
    out(conn, r:get("b"))
    out(conn, r:get("c"))
    out(conn, r:get("d"))
  end,
}
]], lport)
    local c = srv:connect()
    local up = assert(l:accept())
    up:settimeout(5)
    expect_bytes(up, resp.command("GET", "a"))
    H.send(up, "$100\r\n")
    assert.are.equal("nil reply too large (max_reply 64 bytes)", H.line(c))
    assert.are.equal("closed", (H.read_to_close(up)))
    up:close()
    up = assert(l:accept())
    up:settimeout(5)
    expect_bytes(up, resp.command("GET", "b"))
    H.send(up, "$3\r\nbbb\r\n")
    assert.are.equal("bbb", H.line(c))
    expect_bytes(up, resp.command("GET", "c"))
    H.send(up, "&1\r\n")
    assert.are.equal("nil protocol error: unexpected type byte 0x26", H.line(c))
    up:close()
    up = assert(l:accept())
    up:settimeout(5)
    expect_bytes(up, resp.command("GET", "d"))
    H.send(up, "$1\r\nd\r\n")
    assert.are.equal("d", H.line(c))
    up:close()
    l:close()
  end)
end)

---------------------------------------------------------------------------
-- a real redis-server
---------------------------------------------------------------------------

describe("hotsock.redis against redis-server", function()
  if not (have("redis-server") and have("redis-cli")) then
    pending("redis-server and redis-cli are not installed")
    return
  end

  local procs = {}

  -- Start redis-server on `port` (default: a free one): proc, port.
  local function start_redis(port, extra)
    port = port or free_port()
    local argv = { "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local p = WB.spawn(argv)
    procs[#procs + 1] = p
    local ok = H.wait_until(function() return cli(port, "PING") == "PONG" end, 10, 0.02)
    assert(ok, "redis-server did not start: " .. p:stdout() .. p:stderr())
    return p, port
  end

  local main, port

  setup(function()
    main, port = start_redis()
  end)

  teardown(function()
    for _, p in ipairs(procs) do p:stop(5) end
  end)

  after_each(H.cleanup)

  -- Wait until CLIENT LIST shows (or, with absent, no longer shows) `cmd`.
  local function wait_cmd(cmd, absent, p)
    local ok = H.wait_until(function()
      local found = cli(p or port, "CLIENT", "LIST"):find("cmd=" .. cmd, 1, true) ~= nil
      return found ~= (absent == true)
    end, 10, 0.02)
    assert(ok, ("CLIENT LIST %s cmd=%s"):format(absent and "still shows" or "never showed", cmd))
  end

  it("runs commands straight-line in a handle coroutine; errors are returned, not raised", function()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port })
    out(conn, r:set("co:k", "v1", "EX", 100))
    out(conn, r:get("co:k"))
    out(conn, r:get("co:missing"))
    out(conn, r:incr("co:n"), r:incr("co:n"), r:incrby("co:n", 10))
    local ttl = r:ttl("co:k")
    out(conn, ttl > 0 and ttl <= 100)
    out(conn, r:call("HSET", "co:h", "f", "v"), r:hget("co:h", "f"), r:hgetall("co:h"))
    out(conn, r:config_get("appendonly"))
    out(conn, pcall(r.incr, r, "co:k"))
    out(conn, r:call("NOSUCHCMD", "x"))
    out(conn, r:mget("co:k", "co:missing", "co:n"))
    out(conn, r:set("co:f", 2.5), r:incrbyfloat("co:f", 1), r:exists("co:k", "co:f", "co:none"))
    out(conn, r:select(2), r:set("co:db2", "two"), r:select(0), r:get("co:db2"))
    out(conn, pcall(r.get, r, {}))
    out(conn, pcall(r.get, r, "k", function() end))
    out(conn, pcall(r.call, r, "SUBSCRIBE", "x"))
    r:close()
    out(conn, r:get("co:k"))
  end,
}
]], port)
    local c = srv:connect()
    local got = lines(c, 16)
    assert.are.same({
      "OK", "v1", "nil", "1 2 12", "true", "1 v [f,v]", "[appendonly,no]",
      "true nil ERR value is not an integer or out of range",
    }, { table.unpack(got, 1, 8) })
    assert.matches("^nil ERR unknown command 'NOSUCHCMD'", got[9])
    assert.are.same({
      "[v1,null,12]", "OK 3.5 2", "OK OK OK nil",
    }, { table.unpack(got, 10, 12) })
    assert.matches("^false .*argument 1 is a table", got[13])
    assert.matches("^false .*takes no callback", got[14])
    assert.matches("^false .*use r:subscribe", got[15])
    assert.are.equal("nil closed", got[16])
    assert.are.equal("two", cli(port, "-n", "2", "GET", "co:db2"))
  end)

  it("takes callbacks in event style, connect included", function()
    local dead = free_port()
    local srv = start(([[
return {
  framing = "line",
  on_message = function(conn, line)
    redis.connect({ port = %d }, function(r, err) out(conn, "refused:", r, err) end)
    local r = redis.connect({ port = port }, function(r, err) out(conn, "connected:", r ~= nil, err) end)
    r:set("ev:k", "v", function(v, err) out(conn, "set", v, err) end)
    r:get("ev:k", function(v, err) out(conn, "get", v, err) end)
    r:get("ev:missing", function(v, err) out(conn, "missing", v, err) end)
    r:incr("ev:k", function(v, err) out(conn, "incr", v, err) end)
    r:hset("ev:h", "a", 1, function(v, err) out(conn, "hset", v, err) end)
    r:call("HGETALL", "ev:h", function(v, err) out(conn, "hgetall", v, err) end)
    r:pipeline(function(p) p:incr("ev:n") p:incr("ev:n") p:get("ev:none") end,
      function(res, err)
        out(conn, "pipeline", res, err)
        r:close()
        r:get("ev:k", function(v, err) out(conn, "after close", v, err) end)
      end)
    out(conn, "queued", pcall(r.get, r, "ev:k"))
  end,
}
]]):format(dead), port)
    local c = srv:connect()
    H.send(c, "go\n")
    local got = lines(c, 11)
    assert.matches("^queued false .*callback as the last argument", got[1])
    table.remove(got, 1)
    table.sort(got) -- the refused connect may report before or after the rest
    assert.are.same({
      "after close nil closed",
      "connected: true nil",
      "get v nil",
      "hgetall [a,1] nil",
      "hset 1 nil",
      "incr nil ERR value is not an integer or out of range",
      "missing nil nil",
      "pipeline [1,2,null] nil",
      "refused: nil connection refused",
      "set OK nil",
    }, got)
  end)

  it("counts exactly: 20 coroutine clients x 50 INCR each", function()
    local srv = start([[
return {
  handle = function(conn)
    conn:receive("*l")
    local r, err = redis.connect{ port = port }
    if not r then return out(conn, "connect failed", err) end
    local last
    for _ = 1, 50 do
      local v, e = r:incr("count:co")
      if not v then return out(conn, "error", e) end
      last = v
    end
    out(conn, "done", math.type(last))
  end,
}
]], port)
    local cs = {}
    for i = 1, 20 do cs[i] = srv:connect() end
    for _, c in ipairs(cs) do H.send(c, "go\n") end
    for _, c in ipairs(cs) do assert.are.equal("done integer", H.line(c)) end
    assert.are.equal("1000", cli(port, "GET", "count:co"))
  end)

  it("counts exactly: 20 event-style clients x 50 INCR on one shared client", function()
    local srv = start([[
local shared
return {
  framing = "line",
  on_message = function(conn)
    shared = shared or redis.connect({ port = port, name = "shared-ev" }, function() end)
    local left = 50
    for _ = 1, 50 do
      shared:incr("count:ev", function(v, err)
        if not v then return out(conn, "error", err) end
        left = left - 1
        if left == 0 then out(conn, "done") end
      end)
    end
  end,
}
]], port)
    local cs = {}
    for i = 1, 20 do cs[i] = srv:connect() end
    for _, c in ipairs(cs) do H.send(c, "go\n") end
    for _, c in ipairs(cs) do assert.are.equal("done", H.line(c)) end
    assert.are.equal("1000", cli(port, "GET", "count:ev"))
    -- one connection carried them all
    local _, n = cli(port, "CLIENT", "LIST"):gsub("name=shared%-ev ", "")
    assert.are.equal(1, n)
  end)

  it("pipelines 1000 commands in order, errors and nulls in place", function()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port })
    local res = assert(r:pipeline(function(p)
      for i = 1, 1000 do p:rpush("pl:list", i) end
    end))
    local ok = res.n == 1000
    for i = 1, 1000 do ok = ok and res[i] == i end
    out(conn, ok)
    res = assert(r:pipeline(function(p)
      p:set("pl:k", "x"):incr("pl:k"):get("pl:none"):lrange("pl:list", 0, 2):call("PING")
    end))
    out(conn, res.n, res)
    out(conn, r:pipeline(function() end))
    out(conn, r:pipeline(function(p)
      p:multi() p:incr("pl:tx") p:incr("pl:tx") p:incr("pl:k") p:exec()
    end))
  end,
}
]], port)
    local c = srv:connect()
    assert.are.same({
      "true",
      "5 [OK,err(ERR value is not an integer or out of range),null,[1,2,3],PONG]",
      "[]",
      "[OK,QUEUED,QUEUED,QUEUED,[1,2,err(ERR value is not an integer or out of range)]]",
    }, lines(c, 4))
    assert.are.equal("1000", cli(port, "LLEN", "pl:list"))
  end)

  it("speaks RESP3 with protocol = 3: maps, sets, doubles, booleans, big numbers, verbatim", function()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port, protocol = 3 })
    r:del("r3:h", "r3:z", "r3:s")
    r:hset("r3:h", "a", "1", "b", "2")
    r:zadd("r3:z", 2.5, "m")
    r:sadd("r3:s", "x", "y")
    out(conn, r:hgetall("r3:h"))
    out(conn, r:zscore("r3:z", "m"), r:zincrby("r3:z", 1, "m"))
    out(conn, r:smembers("r3:s"))
    out(conn, r:get("r3:none"), r:mget("r3:none", "r3:none"))
    out(conn, r:eval("redis.setresp(3); return {true, false}", 0))
    out(conn, r:eval("redis.setresp(3); return {double = 0.25}", 0))
    out(conn, r:eval("redis.setresp(3); return {big_number = '123456789012345678901234567890'}", 0))
    out(conn, r:eval("redis.setresp(3); return {verbatim_string = {format = 'txt', string = 'hi'}}", 0))
    out(conn, r:call("HELLO")["proto"])
    out(conn, r:incr("r3:h"))
    -- client-side caching: invalidations are push messages, not replies
    local pushes = {}
    local t = assert(redis.connect{ port = port, protocol = 3,
      on_push = function(m) pushes[#pushes + 1] = show(m) end })
    out(conn, t:client_tracking("on"), t:get("r3:tracked"))
    conn:receive("*l")
    out(conn, t:ping(), table.concat(pushes, " "))
  end,
}
]], port)
    local c = srv:connect()
    assert.are.same({
      "{a=1,b=2}",
      "2.5f 3.5f",
      "{x=true,y=true}",
      "nil [null,null]",
      "[true,false]",
      "0.25f",
      "123456789012345678901234567890",
      "hi",
      "3",
      "nil WRONGTYPE Operation against a key holding the wrong kind of value",
      "OK nil",
    }, lines(c, 11))
    assert.are.equal("OK", cli(port, "SET", "r3:tracked", "changed"))
    H.send(c, "next\n")
    assert.are.equal("PONG [invalidate,[r3:tracked]]", H.line(c))
  end)

  it("authenticates with username and password, and selects the db, on every connection", function()
    assert.are.equal("OK", cli(port, "ACL", "SETUSER", "hsuser", "on", ">s3cret", "~*", "&*", "+@all"))
    local srv = start([[
return {
  handle = function(conn)
    for _, proto in ipairs({ 2, 3 }) do
      local r = assert(redis.connect{ port = port, username = "hsuser", password = "s3cret",
                                      db = 5, protocol = proto, name = "hs-test" })
      out(conn, r:acl_whoami(), r:client_getname(), r:set("auth:k" .. proto, "five"))
      -- drop it; the drop is seen by the next command (which fails), and
      -- the one after reconnects: authenticated, on db 5
      r:client_kill("TYPE", "normal", "SKIPME", "no")
      local _, err = r:ping()
      out(conn, err, r:get("auth:k" .. proto), r:acl_whoami())
    end
    out(conn, redis.connect{ port = port, username = "hsuser", password = "wrong" })
  end,
}
]], port)
    local c = srv:connect()
    local got = lines(c, 5)
    assert.are.same({ "hsuser hs-test OK", "closed five hsuser", "hsuser hs-test OK", "closed five hsuser" },
      { table.unpack(got, 1, 4) })
    assert.matches("^nil WRONGPASS", got[5])
    assert.are.equal("five", cli(port, "-n", "5", "GET", "auth:k3"))
    cli(port, "ACL", "DELUSER", "hsuser")
  end)

  it("subscribes on a connection of its own; next_message in a coroutine", function()
    local srv = start([[
return {
  handle = function(conn)
    local proto = tonumber(conn:receive("*l"))
    local pre = "co" .. proto .. ":"
    local r = assert(redis.connect{ port = port, protocol = proto })
    assert(r:subscribe(pre .. "news", pre .. "other"))
    assert(r:psubscribe(pre .. "pat:*"))
    out(conn, "subscribed", r:get(pre .. "none"), r:set(pre .. "still", "works"))
    while true do
      local l = conn:receive("*l")
      if not l then return end
      if l == "unsub" then
        out(conn, r:unsubscribe(pre .. "news"))
      else
        local m, err = r:next_message(tonumber(l))
        if m then out(conn, m.kind, m.pattern, m.channel, m.payload) else out(conn, m, err) end
      end
    end
  end,
}
]], port)
    for _, proto in ipairs({ "2", "3" }) do
      local pre = "co" .. proto .. ":"
      local c = srv:connect()
      H.send(c, proto .. "\n")
      assert.are.equal("subscribed nil OK", H.line(c))
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "news", "hello"))
      H.send(c, "5000\n")
      assert.are.equal("message nil " .. pre .. "news hello", H.line(c))
      H.send(c, "50\n")
      assert.are.equal("nil timeout", H.line(c))
      -- still subscribed after the time-out
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "pat:7", "p1"))
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "other", "o1"))
      H.send(c, "5000\n5000\n")
      assert.are.equal("pmessage " .. pre .. "pat:* " .. pre .. "pat:7 p1", H.line(c))
      assert.are.equal("message nil " .. pre .. "other o1", H.line(c))
      H.send(c, "unsub\n")
      assert.are.equal("true", H.line(c))
      assert(H.wait_until(function() return cli(port, "PUBLISH", pre .. "news", "gone") == "0" end, 10, 0.02))
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "other", "o2"))
      H.send(c, "5000\n")
      assert.are.equal("message nil " .. pre .. "other o2", H.line(c))
      -- the subscriber connection is dropped: the wait ends with "closed",
      -- and the next one subscribes again
      assert.truthy(tonumber(cli(port, "CLIENT", "KILL", "TYPE", "pubsub")) >= 1)
      H.send(c, "5000\n")
      assert.are.equal("nil closed", H.line(c))
      H.send(c, "5000\n")
      assert(H.wait_until(function() return cli(port, "PUBLISH", pre .. "other", "o3") == "1" end, 10, 0.02))
      assert.are.equal("message nil " .. pre .. "other o3", H.line(c))
      c:close()
    end
  end)

  it("gives a handle coroutine an event-style client too (callbacks, no waiting)", function()
    local srv = start([[
return {
  handle = function(conn)
    local ev = redis.connect({ port = port }, function(r, err) out(conn, "ev connected", r ~= nil, err) end)
    ev:set("mix:k", "from ev", function(v, err)
      ev:get("mix:k", function(v2, err2) out(conn, "ev", v, v2, err2) end)
    end)
    conn:receive("*l")
    local r = assert(redis.connect{ port = port })
    out(conn, r:get("mix:k"), r:quit(), r:get("mix:k"))
    ev:close()
  end,
}
]], port)
    local c = srv:connect()
    assert.are.same({ "ev connected true nil", "ev OK from ev nil" }, lines(c, 2))
    H.send(c, "next\n")
    assert.are.equal("from ev OK from ev", H.line(c))
  end)

  it("delivers messages to a handler in event style, and subscribes again after a drop", function()
    local srv = start([[
return {
  framing = "line",
  on_message = function(conn, line)
    local proto = tonumber(line)
    local pre = "ev" .. proto .. ":"
    local r = redis.connect({ port = port, protocol = proto }, function() end)
    conn.r = r
    r:subscribe(pre .. "news", function(m, err)
      if not m then return out(conn, "handler", m, err) end
      out(conn, m.kind, m.channel, m.payload, m.count)
    end)
    r:psubscribe(pre .. "p*", function(m, err)
      if not m then return out(conn, "phandler", m, err) end
      out(conn, m.kind, m.pattern, m.channel, m.payload, m.count)
    end)
  end,
}
]], port)
    for _, proto in ipairs({ "2", "3" }) do
      local pre = "ev" .. proto .. ":"
      local c = srv:connect()
      H.send(c, proto .. "\n")
      local got = lines(c, 2)
      table.sort(got)
      assert.are.same({ "psubscribe " .. pre .. "p* nil nil 2",
                        "subscribe " .. pre .. "news nil 1" }, got)
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "news", "hello"))
      assert.are.equal("message " .. pre .. "news hello nil", H.line(c))
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "px", "pat"))
      assert.are.equal("pmessage " .. pre .. "p* " .. pre .. "px pat nil", H.line(c))
      cli(port, "CLIENT", "KILL", "TYPE", "pubsub")
      got = lines(c, 4)
      table.sort(got)
      assert.are.same({ "handler nil closed", "phandler nil closed",
                        "psubscribe " .. pre .. "p* nil nil 2",
                        "subscribe " .. pre .. "news nil 1" }, got)
      assert.are.equal("1", cli(port, "PUBLISH", pre .. "news", "again"))
      assert.are.equal("message " .. pre .. "news again nil", H.line(c))
    end
  end)

  it("times out a command, closes its connection, and the next command gets its own reply", function()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port, timeout = 200 })
    out(conn, r:set("to:k", "mine"), r:del("to:list"))
    out(conn, r:blpop("to:list", 30))
    conn:receive("*l")
    out(conn, r:get("to:k"), r:llen("to:list"))
  end,
}
]], port)
    local c = srv:connect()
    assert.are.equal("OK 0", H.line(c))
    assert.are.equal("nil timeout", H.line(c))
    -- the abandoned BLPOP's connection is gone, so nothing takes this
    wait_cmd("blpop", true)
    assert.are.equal("1", cli(port, "RPUSH", "to:list", "x"))
    H.send(c, "next\n")
    assert.are.equal("mine 1", H.line(c))
  end)

  it("times out in event style with a per-call timeout; the other requests in flight fail", function()
    local srv = start([[
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "go" then
      local r = redis.connect({ port = port }, function() end)
      conn.r = r
      r:del("to:evlist", function() end)
      r:call({ timeout = 150 }, "BLPOP", "to:evlist", 30, function(v, err) out(conn, "blpop", v, err) end)
      r:get("to:evk", function(v, err) out(conn, "behind", v, err) end)
    else
      conn.r:set("to:evk", "own", function() end)
      conn.r:get("to:evk", function(v, err) out(conn, "next", v, err) end)
    end
  end,
}
]], port)
    local c = srv:connect()
    H.send(c, "go\n")
    assert.are.same({ "blpop nil timeout", "behind nil closed" }, lines(c, 2))
    wait_cmd("blpop", true)
    assert.are.equal("1", cli(port, "RPUSH", "to:evlist", "x"))
    H.send(c, "next\n")
    assert.are.equal("next own nil", H.line(c))
    assert.are.equal("1", cli(port, "LLEN", "to:evlist"))
  end)

  it("fails the commands in flight when the connection drops, never retries them, and reconnects", function()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port })
    out(conn, r:del("rc:n", "rc:list"))
    -- the INCR waits behind the BLPOP, on the same connection
    out(conn, r:pipeline(function(p) p:blpop("rc:list", 30) p:incr("rc:n") end, { timeout = 0 }))
    out(conn, r:get("rc:n"), r:incr("rc:n"))
    conn:receive("*l") -- killed while idle
    out(conn, r:get("rc:n"))
    out(conn, r:get("rc:n"))
  end,
}
]], port)
    local c = srv:connect()
    assert.are.equal("0", H.line(c))
    wait_cmd("blpop")
    assert.truthy(tonumber(cli(port, "CLIENT", "KILL", "TYPE", "normal")) >= 1)
    assert.are.equal("nil closed", H.line(c))
    assert.are.equal("nil 1", H.line(c)) -- the INCR was never run, nor sent again
    cli(port, "CLIENT", "KILL", "TYPE", "normal")
    H.send(c, "next\n")
    -- in coroutine style a drop while idle is seen by the next command,
    -- which fails; the one after reconnects
    assert.are.equal("nil closed", H.line(c))
    assert.are.equal("1", H.line(c))
  end)

  it("reconnects in event style: in-flight requests fail, a drop while idle costs nothing", function()
    local srv = start([[
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "go" then
      local r = redis.connect({ port = port, timeout = 0 }, function() end)
      conn.r = r
      r:del("rce:n", "rce:list", function() end)
      r:blpop("rce:list", 30, function(v, err) out(conn, "blpop", v, err) end)
      r:incr("rce:n", function(v, err)
        out(conn, "incr", v, err)
        r:get("rce:n", function(v, err) out(conn, "get", v, err) end)
      end)
    elseif line == "state" then
      out(conn, conn.r:connected())
    else
      conn.r:incr("rce:n", function(v, err) out(conn, "incr", v, err) end)
    end
  end,
}
]], port)
    local c = srv:connect()
    H.send(c, "go\n")
    wait_cmd("blpop")
    cli(port, "CLIENT", "KILL", "TYPE", "normal")
    assert.are.same({ "blpop nil closed", "incr nil closed", "get nil nil" }, lines(c, 3))
    H.send(c, "state\n")
    assert.are.equal("true", H.line(c))
    cli(port, "CLIENT", "KILL", "TYPE", "normal")
    assert(H.wait_until(function()
      H.send(c, "state\n")
      return H.line(c) == "false"
    end, 10, 0.02))
    H.send(c, "incr\n")
    assert.are.equal("incr 1 nil", H.line(c))
  end)

  it("backs off between failed connects, doubling up to the cap, and comes back", function()
    local rp, rport = start_redis()
    local srv = start([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port, backoff = 100, max_backoff = 400 })
    out(conn, r:set("bo:k", "v"))
    conn:receive("*l") -- redis-server is stopped
    out(conn, r:get("bo:k")) -- the drop
    local delays = {}
    for _ = 1, 4 do
      -- timers count whole ms of the loop's clock: wait a little longer
      local w = r.retry_at - hs.now()
      if w > 0 then hs.sleep(w + 5) end
      local v, err = r:get("bo:k")
      delays[#delays + 1] = math.floor((r.retry_at - hs.now()) / 10 + 0.5) * 10
      if v or err ~= "connection refused" then return out(conn, "unexpected", v, err) end
    end
    out(conn, table.concat(delays, " "), r.fails)
    -- within the back-off: no attempt, the last error at once
    local before = hs.stats().connect_failed
    local v, err = r:get("bo:k")
    out(conn, v, err, hs.stats().connect_failed - before)
    conn:receive("*l") -- redis-server runs again
    local w = r.retry_at - hs.now()
    if w > 0 then hs.sleep(w + 5) end
    out(conn, r:get("bo:k"), r:set("bo:k", "back"), r:get("bo:k"), r.fails)
  end,
}
]], rport)
    local c = srv:connect()
    assert.are.equal("OK", H.line(c))
    rp:stop(5)
    H.send(c, "stopped\n")
    assert.are.equal("nil closed", H.line(c))
    assert.are.equal("100 200 400 400 4", H.line(c))
    assert.are.equal("nil connection refused 0", H.line(c))
    start_redis(rport)
    H.send(c, "started\n")
    assert.are.equal("nil OK back 0", H.line(c))
  end)

  it("passes tls through to hs.connect and verifies the server", function()
    if not have("openssl") then
      pending("openssl is not installed")
      return
    end
    local dir = H.tempdir()
    local cmds = {
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
        .. " -subj /CN=hotsock-test-ca -keyout ca.key -out ca.pem",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
        .. " -subj /CN=localhost -keyout key.pem -out req.csr",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
      "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        .. " -extfile ext.cnf -out cert.pem",
    }
    for _, cmd in ipairs(cmds) do
      local o, rc = sh("cd " .. H.quote(dir) .. " && " .. cmd)
      assert(rc == 0, cmd .. "\n" .. o)
    end
    local tport = free_port()
    local p = WB.spawn({ "redis-server", "--port", "0", "--tls-port", tostring(tport),
      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      "--tls-cert-file", dir .. "/cert.pem", "--tls-key-file", dir .. "/key.pem",
      "--tls-ca-cert-file", dir .. "/ca.pem", "--tls-auth-clients", "no" })
    procs[#procs + 1] = p
    local up = H.wait_until(function()
      local o = sh(("timeout 5 redis-cli --tls --cacert %s -h 127.0.0.1 -p %d PING")
        :format(H.quote(dir .. "/ca.pem"), tport))
      return o:match("PONG")
    end, 10, 0.05)
    if not up then
      p:stop(5)
      pending("this redis-server has no TLS: " .. p:stderr():sub(1, 300))
      return
    end
    local srv = start(([[
return {
  handle = function(conn)
    local r = assert(redis.connect{ port = port, tls = { ca = %q } })
    out(conn, r:set("tls:k", "secret"), r:get("tls:k"))
    out(conn, redis.connect{ port = port, tls = true })
  end,
}
]]):format(dir .. "/ca.pem"), tport)
    local c = srv:connect()
    assert.are.equal("OK secret", H.line(c))
    assert.matches("^nil TLS handshake: certificate verify failed", H.line(c))
    p:stop(5)
  end)
end)
