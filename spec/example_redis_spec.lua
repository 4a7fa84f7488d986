-- examples/redis.lua driven by the real clients: redis-cli and
-- redis-benchmark, plus raw sockets for pipelining and protocol errors.
package.path = "spec/?.lua;lua/?.lua;" .. package.path
local H = require "helper"
local resp = require "hotsock.resp"
local socket = require "socket"

local have = H.have

local sh = H.sh

-- redis-cli -p PORT args... -> output without the final newline
local function cli(srv, ...)
  local parts = { "timeout 20 redis-cli -h 127.0.0.1 -p", tostring(srv.port) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.quote(a) end
  local out = sh(table.concat(parts, " "))
  return (out:gsub("\n$", ""))
end

local function lines(s)
  local t = {}
  for l in (s .. "\n"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function start(opts)
  return H.start("examples/redis.lua", opts)
end

-- One RESP reply read from c within `wait` seconds (default 5), decoded
-- (an error is {err = "..."}), or nil and "timeout" / "closed" / ...
local decoders = setmetatable({}, { __mode = "k" })
local function reply(c, wait)
  local d = decoders[c]
  if not d then
    d = resp.reply_decoder()
    decoders[c] = d
  end
  local deadline = socket.gettime() + (wait or 5)
  c:settimeout(0) -- take what has arrived; wait in select
  local v, err
  while true do
    v, err = d:next()
    if v ~= nil or err then break end
    local data, e, partial = c:receive(65536)
    data = data or partial
    if data and data ~= "" then
      d:feed(data)
    elseif e ~= "timeout" then
      err = e
      break
    else
      local left = deadline - socket.gettime()
      if left <= 0 then
        err = "timeout"
        break
      end
      socket.select({ c }, nil, math.min(left, 0.5))
    end
  end
  c:settimeout(3)
  return v, err
end

-- Send one command (as a RESP array) and read its reply.
local function call(c, ...)
  H.send(c, resp.command(...))
  return reply(c)
end

describe("examples/redis.lua", function()
  after_each(H.cleanup)

  if not have("redis-cli") then
    pending("redis-cli is not installed")
    return
  end

  it("answers PING and ECHO", function()
    local srv = start()
    assert.are.equal("PONG", cli(srv, "ping"))
    assert.are.equal("hi there", cli(srv, "ping", "hi there"))
    assert.are.equal("a\tb", cli(srv, "echo", "a\tb"))
  end)

  it("sets and gets, with NX, XX and GET", function()
    local srv = start()
    assert.are.equal("OK", cli(srv, "set", "k", "v 1"))
    assert.are.equal("v 1", cli(srv, "get", "k"))
    assert.are.equal("", cli(srv, "get", "missing"))         -- nil prints as nothing
    assert.are.equal("", cli(srv, "set", "k", "x", "NX"))    -- not set
    assert.are.equal("v 1", cli(srv, "get", "k"))
    assert.are.equal("", cli(srv, "set", "new", "x", "XX"))  -- not set
    assert.are.equal("0", cli(srv, "exists", "new"))
    assert.are.equal("v 1", cli(srv, "set", "k", "v2", "GET"))
    assert.are.equal("v2", cli(srv, "get", "k"))
    assert.matches("syntax error", cli(srv, "set", "k", "v", "BOGUS"))
    assert.matches("wrong number of arguments", cli(srv, "get"))
    assert.matches("wrong number of arguments", cli(srv, "ping", "a", "b"))
    assert.are.same({ "v2", "", "v2" }, lines(cli(srv, "mget", "k", "missing", "k")))
  end)

  it("keeps a binary-safe value", function()
    local srv = start()
    local c = srv:connect()
    local v = "a\r\nb\0c"
    H.send(c, "*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$" .. #v .. "\r\n" .. v .. "\r\n*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n")
    assert.are.equal("+OK", H.line(c))
    assert.are.equal("$6", H.line(c))
    assert.are.equal(v .. "\r\n", H.recv(c, 8))
  end)

  it("expires keys: EX with TTL, PX, EXPIRE and PERSIST", function()
    local srv = start()
    assert.are.equal("OK", cli(srv, "set", "t", "1", "EX", "100"))
    local ttl = tonumber(cli(srv, "ttl", "t"))
    assert.is_true(ttl > 0 and ttl <= 100, "ttl " .. tostring(ttl))
    assert.are.equal("-2", cli(srv, "ttl", "missing"))
    assert.are.equal("OK", cli(srv, "set", "p", "1"))
    assert.are.equal("-1", cli(srv, "ttl", "p"))
    assert.are.equal("1", cli(srv, "expire", "p", "50"))
    assert.is_true(tonumber(cli(srv, "pttl", "p")) > 0)
    assert.are.equal("1", cli(srv, "persist", "p"))
    assert.are.equal("-1", cli(srv, "ttl", "p"))
    -- a short time to live: the key goes away (lazily or by the sweep)
    assert.are.equal("OK", cli(srv, "set", "short", "1", "PX", "30"))
    assert.is_truthy(H.wait_until(function() return cli(srv, "exists", "short") == "0" end, 5, 0.05))
    assert.are.equal("-2", cli(srv, "ttl", "short"))
    -- the sweep removes expired keys nobody touches: DBSIZE drops
    assert.are.equal("OK", cli(srv, "set", "s1", "1", "PX", "20"))
    assert.are.equal("OK", cli(srv, "set", "s2", "1", "PX", "20"))
    assert.is_truthy(H.wait_until(function() return cli(srv, "dbsize") == "2" end, 5, 0.05),
      "dbsize " .. cli(srv, "dbsize"))
    assert.matches("invalid expire time", cli(srv, "set", "k", "v", "EX", "0"))
  end)

  it("counts with INCR, DECR and INCRBY, and refuses non-integers", function()
    local srv = start()
    assert.are.equal("1", cli(srv, "incr", "n"))
    assert.are.equal("2", cli(srv, "incr", "n"))
    assert.are.equal("12", cli(srv, "incrby", "n", "10"))
    assert.are.equal("11", cli(srv, "decr", "n"))
    assert.are.equal("11", cli(srv, "get", "n"))
    cli(srv, "set", "s", "abc")
    assert.matches("not an integer", cli(srv, "incr", "s"))
    cli(srv, "set", "big", "9223372036854775807")
    assert.matches("overflow", cli(srv, "incr", "big"))
  end)

  it("lists keys by glob, deletes and counts them, flushes", function()
    local srv = start()
    for _, k in ipairs({ "user:1", "user:2", "user:10", "admin:1", "a*b" }) do
      assert.are.equal("OK", cli(srv, "set", k, "x"))
    end
    local function keys(p)
      local t = lines(cli(srv, "keys", p))
      if t[1] == "" then t = {} end
      table.sort(t)
      return t
    end
    assert.are.same({ "a*b", "admin:1", "user:1", "user:10", "user:2" }, keys("*"))
    assert.are.same({ "user:1", "user:10", "user:2" }, keys("user:*"))
    assert.are.same({ "user:1", "user:2" }, keys("user:?"))
    assert.are.same({ "user:1", "user:2" }, keys("user:[12]"))
    assert.are.same({ "user:2" }, keys("user:[^1]"))
    assert.are.same({ "user:1", "user:2" }, keys("user:[0-9]"))
    assert.are.same({ "admin:1" }, keys("?dmin*"))
    assert.are.same({ "a*b" }, keys("a\\*b"))
    assert.are.same({}, keys("nothing*"))
    assert.are.same({}, keys("user:[]"))
    assert.are.equal("5", cli(srv, "dbsize"))
    assert.are.equal("2", cli(srv, "del", "user:1", "user:2", "user:3"))
    assert.are.equal("1", cli(srv, "exists", "user:10", "user:1"))
    assert.are.equal("3", cli(srv, "dbsize"))
    assert.are.equal("OK", cli(srv, "flushall"))
    assert.are.equal("0", cli(srv, "dbsize"))
  end)

  -- KEYS used to turn the glob into a Lua pattern with a .* per star,
  -- matched by string.find in C: backtracking exponential in the stars,
  -- which handler_budget cannot stop (Redis: CVE-2022-36021).
  it("answers KEYS with many stars on a long key at once, and serves others meanwhile", function()
    local srv = start()
    local c, other = srv:connect(), srv:connect()
    assert.are.equal("OK", call(c, "SET", ("a"):rep(1999), "1"))
    assert.are.equal("OK", call(c, "SET", "aaaaaab", "1"))
    assert.are.equal("OK", call(c, "SET", "aaaaab", "1"))     -- one a short
    assert.are.equal("OK", call(c, "SET", "xaxaxaxaxaxaxb", "1"))
    H.send(c, resp.command("KEYS", "*a*a*a*a*a*a*b"))
    H.send(other, "PING\r\n")
    -- generous waits: the old matcher took 6 s for *a*a*b on that key alone
    local keys, err = reply(c, 5)
    assert.is_table(keys, "no KEYS reply within 5 s: " .. tostring(err))
    table.sort(keys)
    assert.are.same({ "aaaaaab", "xaxaxaxaxaxaxb" }, keys)
    assert.are.equal("PONG", (reply(other, 5)))
    assert.are.same({}, call(c, "KEYS", "*a*a*a*a*a*a*a*b"))
  end)

  it("stops a KEYS that runs past handler_budget; only its client pays", function()
    local srv = start({ args = { "--handler-budget", "200" } })
    local c, other = srv:connect(), srv:connect()
    assert.are.equal("OK", call(c, "SET", ("a"):rep(200000), "1"))
    -- one star, then 20000 a's and a b: each of the key's 200000 starts
    -- matches 20000 a's before it fails, billions of steps
    H.send(c, resp.command("KEYS", "*" .. ("a"):rep(20000) .. "b"))
    local v, err = reply(c, 10)
    assert.is_nil(v)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    srv:expect_log("exceeded handler_budget")
    H.send(other, "PING\r\n")
    assert.are.equal("PONG", (reply(other)))
    assert.are.equal(1, call(other, "EXISTS", ("a"):rep(200000)))
  end)

  it("matches KEYS globs as Redis does: * ? [abc] [^abc] [a-z] and \\ escapes", function()
    local srv = start()
    local c = srv:connect()
    local all = { "hello", "hallo", "hxllo", "hllo", "heeeello", "ab", "b",
      "a*b", "a?b", "a[b", "a\\b", "axb", "a.b", "a-b", "a]b", "x%y" }
    for _, k in ipairs(all) do assert.are.equal("OK", call(c, "SET", k, "1")) end
    local a_b = { "a*b", "a-b", "a.b", "a?b", "a[b", "a\\b", "a]b", "axb" } -- a, any byte, b
    local cases = {
      { "*", all },
      { "**", all },
      { "hello", { "hello" } },
      { "hell", {} },
      { "", {} },
      { "h*llo", { "hello", "hallo", "hxllo", "hllo", "heeeello" } },
      { "h*l*o", { "hello", "hallo", "hxllo", "hllo", "heeeello" } },
      { "*o", { "hello", "hallo", "hxllo", "hllo", "heeeello" } },
      { "a*", { "ab", table.unpack(a_b) } },
      { "*b", { "ab", "b", table.unpack(a_b) } },
      { "**b", { "ab", "b", table.unpack(a_b) } },
      { "h?llo", { "hello", "hallo", "hxllo" } },
      { "?", { "b" } },
      { "??", { "ab" } },
      { "a?b", a_b },
      { "h[ae]llo", { "hello", "hallo" } },
      { "h[^e]llo", { "hallo", "hxllo" } },
      { "h[a-e]llo", { "hello", "hallo" } },
      { "h[e-a]llo", { "hello", "hallo" } },               -- a reversed range
      { "h[^a-e]llo", { "hxllo" } },
      { "a[]b", {} },                                       -- an empty class
      { "a[^]b", a_b },                                     -- and its negation
      { "a[bx", { "ab" } },                                 -- unclosed: to the end
      { "a[-]b", { "a-b" } },
      { "a[\\]]b", { "a]b" } },
      { "a[\\-x]b", { "a-b", "axb" } },
      { "a\\*b", { "a*b" } },
      { "a\\?b", { "a?b" } },
      { "a\\[b", { "a[b" } },
      { "a\\\\b", { "a\\b" } },
      { "a.b", { "a.b" } },                                 -- no Lua pattern magic
      { "x%y", { "x%y" } },
      { "nothing*", {} },
    }
    for _, case in ipairs(cases) do
      local got = call(c, "KEYS", case[1])
      assert.is_table(got, case[1])
      table.sort(got)
      local want = { table.unpack(case[2]) }
      table.sort(want)
      assert.are.same(want, got, "KEYS " .. case[1])
    end
  end)

  -- The data lives in the Lua heap (max_lua_memory). Near the cap, writes
  -- get -OOM as from Redis over maxmemory, and reads still work: a reply
  -- with a value is sent as pieces, never built as one new string.
  it("refuses writes with -OOM near the heap cap; reads and the connection go on", function()
    local cap = 8 * 1024 * 1024
    local srv = start({ args = { "--max-lua-memory", tostring(cap) } })
    local c = srv:connect()
    c:setoption("tcp-nodelay", true) -- 60 KB commands: no wait for a delayed ACK
    local function value(i) return ("%06d"):format(i) .. ("v"):rep(60000 - 6) end
    local stored, refused, err = 0, nil, nil
    for i = 1, 300 do -- 300 * 60 KB is twice the cap
      local r
      r, err = call(c, "SET", "k" .. i, value(i))
      if r ~= "OK" then refused = r break end
      stored = i
    end
    assert.are.same({ err = "OOM command not allowed when used memory > 'maxmemory'." }, refused,
      ("after %d SETs: %s"):format(stored, tostring(err)))
    assert.is_true(stored >= 50, "only " .. stored .. " values of 60 KB in 8 MiB")
    -- other writes that do not fit either (APPEND copies the old value)
    assert.are.same({ err = "OOM command not allowed when used memory > 'maxmemory'." },
      call(c, "SET", "other", value(0)))
    assert.are.same({ err = "OOM command not allowed when used memory > 'maxmemory'." },
      call(c, "APPEND", "k1", ("x"):rep(60000)))
    -- reads: the same connection, whole values
    assert.are.equal("PONG", call(c, "PING"))
    for _, i in ipairs({ 1, stored // 2, stored }) do
      assert.are.equal(value(i), call(c, "GET", "k" .. i))
    end
    -- all of them in one reply, several times the room left in the heap
    local names = {}
    for i = 1, stored do names[i] = "k" .. i end
    names[stored + 1] = "missing"
    local all = call(c, "MGET", table.unpack(names))
    assert.is_table(all)
    assert.are.equal(stored + 1, #all)
    for i = 1, stored do assert.are.equal(value(i), all[i], "k" .. i) end
    assert.are.equal(resp.null, all[stored + 1])
    assert.are.equal("PONG", call(c, "PING"))
    -- another client
    local c2 = srv:connect()
    assert.are.equal(value(stored), call(c2, "GET", "k" .. stored))
    assert.are.equal(stored, call(c2, "DBSIZE"))
    local mm = call(c2, "CONFIG", "GET", "maxmemory")
    assert.is_true(tonumber(mm[2]) > 0 and tonumber(mm[2]) < cap, mm[2])
    -- once keys are deleted, writes are taken again
    assert.are.equal(stored // 2, call(c2, "DEL", table.unpack(names, 1, stored // 2)))
    assert.is_truthy(H.wait_until(function() return call(c, "SET", "again", value(0)) == "OK" end, 5, 0.05))
    assert.are.equal(value(0), call(c, "GET", "again"))
    local log = srv:stderr()
    assert.is_nil(log:find("error", 1, true), log)
  end)

  it("answers pipelined inline and RESP commands in order", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "PING\r\nSET a 1\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\nGET a\r\nECHO \"x y\"\r\nNOSUCH 1\r\n")
    assert.are.equal("+PONG", H.line(c))
    assert.are.equal("+OK", H.line(c))
    assert.are.equal(":2", H.line(c))
    assert.are.equal("$1", H.line(c))
    assert.are.equal("2", H.line(c))
    assert.are.equal("$3", H.line(c))
    assert.are.equal("x y", H.line(c))
    assert.matches("^%-ERR unknown command 'NOSUCH'", H.line(c))
    -- the same, one byte at a time
    H.send_bytewise(c, "*2\r\n$3\r\nGET\r\n$1\r\na\r\nPING\r\n")
    assert.are.equal("$1", H.line(c))
    assert.are.equal("2", H.line(c))
    assert.are.equal("+PONG", H.line(c))
  end)

  it("takes a bulk load through redis-cli --pipe", function()
    local srv = start()
    local parts = {}
    for i = 1, 500 do
      parts[#parts + 1] = ("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n")
        :format(#("key" .. i), "key" .. i, #("val" .. i), "val" .. i)
    end
    parts[#parts + 1] = "*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n"
    local file = H.write_script(table.concat(parts), "load.resp")
    local out = sh("timeout 20 redis-cli -h 127.0.0.1 -p " .. srv.port .. " --pipe < " .. H.quote(file))
    assert.matches("errors: 0, replies: 501", out)
    assert.are.equal("501", cli(srv, "dbsize"))
    assert.are.equal("val250", cli(srv, "get", "key250"))
  end)

  it("answers a protocol error and closes that connection only", function()
    local srv = start()
    local other = srv:connect()
    local c = srv:connect()
    H.send(c, "PING\r\n*1\r\n$x\r\n")
    assert.are.equal("+PONG", H.line(c))
    assert.matches("^%-ERR Protocol error: invalid bulk length", H.line(c))
    assert.are.equal("closed", (H.read_to_close(c)))
    H.send(other, "PING\r\n")
    assert.are.equal("+PONG", H.line(other))
    -- over the inline limit
    local c2 = srv:connect()
    H.send(c2, ("x"):rep(70 * 1024))
    assert.matches("too big inline request", H.line(c2))
  end)

  it("QUIT answers OK and closes", function()
    local srv = start()
    local c = srv:connect()
    H.send(c, "QUIT\r\nPING\r\n")
    assert.are.equal("+OK", H.line(c))
    local err, rest = H.read_to_close(c)
    assert.are.equal("closed", err)
    assert.are.equal("", rest)
  end)

  it("keeps the data across a reload", function()
    local srv = start()
    assert.are.equal("OK", cli(srv, "set", "kept", "yes"))
    local c = srv:connect()
    H.send(c, "SET during reload\r\n")
    assert.are.equal("+OK", H.line(c))
    srv:signal("HUP")
    srv:expect_log("reloaded")
    assert.are.equal("yes", cli(srv, "get", "kept"))
    H.send(c, "GET during\r\n")
    assert.are.equal("$6", H.line(c))
    assert.are.equal("reload", H.line(c))
  end)

  it("serves redis-benchmark without errors", function()
    if not have("redis-benchmark") then
      pending("redis-benchmark is not installed")
      return
    end
    local srv = start()
    local out, code = sh("timeout 60 redis-benchmark -h 127.0.0.1 -p " .. srv.port ..
      " -q -n 2000 -c 10 -t set,get")
    assert.are.equal(0, code, out)
    assert.matches("SET: [%d%.]+ requests per second", out)
    assert.matches("GET: [%d%.]+ requests per second", out)
    assert.is_nil(out:lower():find("error"), out)
    -- pipelined too
    out, code = sh("timeout 60 redis-benchmark -h 127.0.0.1 -p " .. srv.port ..
      " -q -n 2000 -c 10 -P 16 -t set,get")
    assert.are.equal(0, code, out)
    assert.matches("GET: [%d%.]+ requests per second", out)
    assert.is_nil(out:lower():find("error"), out)
    local st = srv:stderr()
    assert.is_nil(st:find("handler error", 1, true), st)
  end)
end)
