-- spec/workbench_spec.lua: `hotsock test`, `hotsock record` and the
-- hotsock.test module (lua/hotsock/workbench.lua, lua/hotsock/test.lua).
--
-- Every child is started through the workbench's own spawn and stopped by
-- PID; redis-server runs on a free loopback port with persistence off.

package.path = "spec/?.lua;" .. package.path
local H = require "helper"
package.path = H.root .. "/lua/?.lua;" .. package.path
local T = require "hotsock.test"
local WB = require "hotsock.workbench"
local socket = require "socket"

local ROOT = H.root
local ENV = { HOTSOCK_LUA_PATH = ROOT .. "/lua/?.lua" }

local function has(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

-- Run the binary to the end (at most `limit` s): exit code, stdout, stderr.
local function run(args, limit)
  local argv = { H.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = WB.spawn(argv, { env = ENV })
  local rc = p:wait_exit(limit or 30)
  local out, err = p:stdout(), p:stderr()
  p:stop(3)
  assert(rc, "hotsock " .. args[1] .. " did not finish within " .. (limit or 30) .. " s")
  local rep = WB.sanitizer_report(err)
  assert(not rep, rep)
  return rc, out, err
end

local function tmpfile(name, text)
  local p = H.tempdir() .. "/" .. name
  if text then assert(WB.write_file(p, text)) end
  return p
end

local function line_of(text, wanted)
  local n = 0
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l == wanted then return n end
  end
end

local free_port = H.free_port

after_each(function()
  T.stop_all()
  WB.stop_all()
  H.cleanup()
end)

describe("hotsock.test", function()
  it("drives examples/echo.lua", function()
    local srv = T.start(ROOT .. "/examples/echo.lua", { bin = H.bin })
    assert.is_number(srv.port)
    local c = srv:client()
    assert.is_true(c:send("hello\n"))
    assert.equal("hello", c:receive("*l"))
    c:send("a b", "\r\n")                     -- several strings, one write
    assert.equal("a b\n", c:receive("*L"))    -- the CR is dropped by "line" framing
    c:send("12345\n")
    assert.equal("123", c:receive(3))
    assert.equal("45", c:expect("(%d+)"))
    c:send("one\ntwo\n")
    c:expect("one")
    assert.has_error(function() c:expect("one") end)   -- "two" is not "one"
    local line, err = c:receive("*l", 0.1)
    assert.is_nil(line)
    assert.equal("timeout", err)
    c:shutdown()
    assert.is_true(c:expect_closed())
    assert.truthy(srv:log():find("listening on 127.0.0.1:" .. srv.port, 1, true))
    assert.equal(0, srv:stop())
  end)

  it("reloads a script given as source and reads the log", function()
    local src = [[
      local hs = require "hotsock"
      return { framing = "line", on_message = function(c, l)
        hs.log.info("got " .. l)
        c:send("v1 ", l, "\n")
      end }
    ]]
    local srv = T.start(src, { bin = H.bin })
    local c = srv:client()
    c:send("x\n")
    assert.equal("v1 x", c:receive())
    assert.equal("x", srv:wait_log("got (%a+)"))
    local gen = srv:reload((src:gsub("v1 ", "v2 ")))
    assert.equal(1, gen)
    c:send("y\n")
    c:expect("v2 y")                          -- the same connection, new code
    assert.has_error(function() srv:reload("return {") end)
    c:send("z\n")
    c:expect("v2 z")                          -- a failed reload keeps the old code
    assert.has_error(function() srv:wait_log("never said", 0.1) end)
    local st = srv:stats()                    -- hs.stats(), read through SIGUSR2
    assert.equal(1, st.accepted)
    assert.equal(1, st.active)
    assert.equal(3, st.frames_in)
    assert.equal(1, st.reload_ok)
    assert.equal(1, st.reload_failed)
    assert.is_true(st.lua_memory > 0 and st.lua_memory <= st.lua_memory_limit)
    local d = srv:client()
    d:send("w\n")
    d:expect("v2 w")
    assert.equal(2, srv:stats().accepted)     -- a second call sees the new count
    assert.equal(0, srv:stop())
  end)

  it("receives RESP values", function()
    local srv = T.start(ROOT .. "/examples/redis.lua", { bin = H.bin })
    local c = srv:client()
    c:send("SET k 12\r\nGET k\r\nGET nope\r\nINCR k\r\n")
    assert.equal("OK", c:receive("resp"))
    assert.equal("12", c:receive("resp"))
    assert.equal(require("hotsock.resp").null, c:receive("resp"))
    assert.equal(13, c:receive("resp"))
    srv:stop()
  end)
end)

describe("transcripts", function()
  it("parse: sends merge, eol modes, escapes, closes, patterns", function()
    local t = assert(WB.parse(table.concat({
      "% script echo.lua a b", "> one", ">| two\\t", "< one", "% eol crlf", "@b", "> x\\x00",
      "<| y\\n", "<~ %d+", "< closed", "< \\x63losed", "! shutdown", "% 10", "% timeout 50",
    }, "\n"), "t.hst"))
    assert.same({ "echo.lua", "a", "b" }, t.script)
    local s = t.steps
    assert.equal("send", s[1].kind)
    assert.equal("one\ntwo\t", s[1].data)        -- two sends of one client: one write
    assert.equal(2, s[1].line)
    assert.equal("one\n", s[2].data)
    assert.equal("open", s[3].kind)
    assert.equal("b", s[3].client)
    assert.equal("x\0\r\n", s[4].data)
    assert.equal("y\n", s[5].data)
    assert.equal("match", s[6].kind)
    assert.equal("closed", s[7].kind)
    assert.equal("closed\r\n", s[8].data)         -- an escaped letter: the text itself
    assert.equal("shutdown", s[9].kind)
    assert.equal(10, s[10].ms)
    assert.equal("timeout", s[11].kind)
    for _, bad in ipairs({ "<x", "> \\q", "~ x", "% nope", "@", "! kill", "<~ [", ">|" }) do
      local r, err = WB.parse(bad, "bad.hst")
      assert.is_nil(r)
      assert.truthy(err:find("^bad%.hst:1: "), err)
    end
  end)

  it("render and escape give lines that parse back to the same bytes", function()
    local bytes = "a b \r\n\tx\\y\0\255\nno end"
    for _, crlf in ipairs({ false, true }) do
      local lines = WB.render("<", bytes, crlf)
      local t = assert(WB.parse((crlf and "% eol crlf\n" or "") .. table.concat(lines, "\n")))
      local got = {}
      for _, st in ipairs(t.steps) do got[#got + 1] = st.data end
      assert.equal(bytes, table.concat(got))
    end
    assert.same({ "< hi\\x20" }, WB.render("<", "hi \n"))
    assert.same({ "<| closed\\n" }, WB.render("<", "closed\n"))
    assert.same({ "< héllo" }, WB.render("<", "héllo\n"))
  end)

  it("the examples' transcripts pass (one server per file)", function()
    local rc, out = run({ "test", "examples/echo.hst", "examples/greeter.hst", "examples/chat.hst",
      "examples/redis.hst", "examples/http.hst" })
    assert.equal(0, rc, out)
    assert.truthy(out:find("5 transcripts: 5 passed, 0 failed", 1, true), out)
  end)

  it("a server that answers differently fails with a diff naming the line", function()
    local proto = tmpfile("proto.lua", [[
      return { framing = "line", on_message = function(c, l) c:send(l:upper(), "\n") end }
    ]])
    local file = tmpfile("echo.hst", "> hello\n< hello\n> again\n< again\n")
    local rc, out = run({ "test", proto, file })
    assert.equal(1, rc)
    assert.truthy(out:find("FAILED  " .. file, 1, true), out)
    assert.truthy(out:find(file .. ":2 (@c1): the server answered differently", 1, true), out)
    assert.truthy(out:find("- < hello\n", 1, true), out)
    assert.truthy(out:find("+ < HELLO\n", 1, true), out)
    -- the same as TAP
    rc, out = run({ "test", "--tap", proto, file })
    assert.equal(1, rc)
    assert.truthy(out:find("^TAP version 13\n1%.%.1\nnot ok 1 %- "), out)
    assert.truthy(out:find("# - < hello", 1, true), out)
  end)

  it("exits 2 on a bad file or bad usage, naming the line", function()
    local file = tmpfile("bad.hst", "> ok\n<oops\n")
    local rc, _, err = run({ "test", "examples/echo.lua", file })
    assert.equal(2, rc)
    assert.truthy(err:find(file .. ":2: ", 1, true), err)
    rc = run({ "test", "examples/echo.lua" })
    assert.equal(2, rc)
    rc = run({ "test", "--timeout", "soon", "examples/echo.hst" })
    assert.equal(2, rc)
  end)

  it("times out a missing answer, sees a close, --connect plays against a running server", function()
    local srv = T.start(ROOT .. "/examples/echo.lua", { bin = H.bin })
    local file = tmpfile("t.hst", "% timeout 200\n> a\n< a\n< b\n")
    local rc, out = run({ "test", "--connect", "127.0.0.1:" .. srv.port, file })
    assert.equal(1, rc)
    assert.truthy(out:find(file .. ":4 (@c1)", 1, true), out)
    assert.truthy(out:find("(nothing more within 200 ms)", 1, true), out)
    file = tmpfile("u.hst", "@x\n> a\n< a\n! shutdown\n< closed\n@y\n>| b\n! shutdown\n< b\n< closed\n")
    rc, out = run({ "test", "--connect", "127.0.0.1:" .. srv.port, file })
    assert.equal(0, rc, out)
    assert.equal(0, srv:stop())
  end)
end)

describe("hotsock record", function()
  it("records a relayed conversation, written on SIGTERM, that replays", function()
    local up = T.start(ROOT .. "/examples/echo.lua", { bin = H.bin })
    local file = tmpfile("rec.hst")
    local rec = WB.spawn({ H.bin, "record", "--listen", "127.0.0.1:0", "--upstream",
      "127.0.0.1:" .. up.port, file }, { env = ENV })
    local addr = H.wait_until(function() return rec:stderr():match("listening on (%S+)") end, 10)
    assert(addr, rec:stderr())
    local c = T.connect("127.0.0.1", tonumber(addr:match(":(%d+)$")))
    c:send("hi\n")
    assert.equal("hi", c:receive())
    c:send("tab\there\n")
    assert.equal("tab\there", c:receive())
    c:send("no end")
    c:shutdown()                    -- echo answers the last line at EOF, then closes
    assert.equal("no end", c:receive())
    c:expect_closed()
    c:close()
    assert(H.wait_until(function() return rec:stderr():find("c1 finished", 1, true) end, 5))
    rec:signal("TERM")
    assert.equal(0, rec:wait_exit(10))
    rec:stop()
    local text = assert(H.read_file(file))
    assert.truthy(text:find("@c1\n> hi\n< hi\n> tab\\there\n< tab\\there\n>| no end\n! shutdown\n"
      .. "< no end\n< closed\n", 1, true), text)
    local rc, out = run({ "test", "examples/echo.lua", file })
    assert.equal(0, rc, out)
    assert.equal(0, up:stop())
  end)

  it("records redis-cli and a real redis-server; replays against examples/redis.lua", function()
    if not (has("redis-server") and has("redis-cli")) then
      pending("redis-server and redis-cli are not installed")
      return
    end
    local port = free_port()
    local redis = WB.spawn({ "redis-server", "--port", tostring(port), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no" })
    assert(H.wait_until(function()
      local s = socket.tcp()
      s:settimeout(0.2)
      local ok = s:connect("127.0.0.1", port)
      s:close()
      return ok
    end, 10), "redis-server did not start: " .. redis:stdout())

    local file = tmpfile("redis.hst")
    local cmds = { { "SET", "wb:k", "v1" }, { "GET", "wb:k" }, { "INCR", "wb:n" },
      { "INCR", "wb:n" }, { "APPEND", "wb:k", " two" }, { "GET", "wb:k" }, { "DEL", "wb:k", "wb:n" } }
    local rec = WB.spawn({ H.bin, "record", "--listen", "127.0.0.1:0", "--upstream",
      "127.0.0.1:" .. port, "--count", tostring(#cmds), file }, { env = ENV })
    local addr = H.wait_until(function() return rec:stderr():match("listening on (%S+)") end, 10)
    assert(addr, rec:stderr())
    local rport = addr:match(":(%d+)$")
    local answers = {}
    for _, cmd in ipairs(cmds) do
      local words = {}
      for i, w in ipairs(cmd) do words[i] = H.quote(w) end
      local f = io.popen(("timeout 10 redis-cli -h 127.0.0.1 -p %s %s"):format(rport,
        table.concat(words, " ")))
      answers[#answers + 1] = f:read("a"):gsub("\n$", "")
      f:close()
    end
    assert.same({ "OK", "v1", "1", "2", "6", "v1 two", "2" }, answers)
    assert.equal(0, rec:wait_exit(10), rec:stderr())
    rec:stop()
    local text = assert(H.read_file(file))
    assert.truthy(text:find("% eol crlf", 1, true), text)
    assert.truthy(text:find("@c7\n", 1, true), text)
    assert.truthy(text:find("> INCR\n> $4\n> wb:n\n< :2\n! close\n", 1, true), text)

    -- the prototype answers the same
    local rc, out = run({ "test", "examples/redis.lua", file })
    assert.equal(0, rc, out)
    -- and so does Redis itself, replayed with --connect
    rc, out = run({ "test", "--connect", "127.0.0.1:" .. port, file })
    assert.equal(0, rc, out)

    -- a prototype whose INCR is wrong: exit 1, the diff names the line
    local proto = tmpfile("proto.lua", [=[
      local store = {}
      return { framing = "resp", on_message = function(c, a)
        local cmd = a[1]:upper()
        if cmd == "SET" then store[a[2]] = a[3] c:send("+OK\r\n")
        elseif cmd == "GET" then c:send("$", #store[a[2]], "\r\n", store[a[2]], "\r\n")
        elseif cmd == "INCR" then c:send(":7\r\n")
        else c:send("-ERR unknown\r\n") end
      end }
    ]=])
    rc, out = run({ "test", proto, file })
    assert.equal(1, rc, out)
    local n = line_of(text, "< :1")
    assert.truthy(out:find(("%s:%d (@c3): the server answered differently"):format(file, n), 1, true), out)
    assert.truthy(out:find("- < :1\n    + < :7\n", 1, true), out)

    redis:stop()
  end)
end)
