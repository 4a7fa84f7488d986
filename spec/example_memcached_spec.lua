-- examples/memcached.lua driven by the real clients (libmemcached-tools:
-- memccp, memccat, memcrm, memcslap), by raw sockets for the protocol
-- details, and side by side with a real memcached where one is installed.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local have = H.have

-- Run a shell command, bounded by the caller's `timeout`; returns its
-- output (stdout and stderr) and exit code.
local sh = H.sh

local function start(opts)
  return H.start("examples/memcached.lua", opts)
end

local function servers(srv)
  return "--servers=127.0.0.1:" .. srv.port
end

-- Send req, then "version": everything that arrives before the VERSION
-- line is the answer to req (noreply commands answer nothing).
local function ask(c, req, wait)
  H.send(c, req .. "version\r\n")
  local buf, deadline = "", socket.gettime() + (wait or 5)
  c:settimeout(0)
  while true do
    local s, e = buf:find("VERSION [^\r\n]*\r\n$")
    if s then
      c:settimeout(3)
      return buf:sub(1, s - 1)
    end
    local data, err, partial = c:receive(1 << 20)
    data = data or partial
    if data and data ~= "" then
      buf = buf .. data
    elseif err ~= "timeout" or socket.gettime() > deadline then
      c:settimeout(3)
      error(("no VERSION line after %q (%s); got %q"):format(req:sub(1, 80), err, buf:sub(1, 300)), 2)
    else
      socket.select({ c }, nil, 0.1)
    end
  end
end

---------------------------------------------------------------------------
-- a real memcached for comparison: a free loopback port, stopped by PID
---------------------------------------------------------------------------

local real -- {pid =, port =} while one runs

local free_port = H.free_port

local function start_memcached()
  local root = sh("id -u"):match("^0") and " -u nobody" or ""
  for _ = 1, 3 do -- the port is free when picked; another process may take it
    local port = free_port()
    local d = H.tempdir()
    os.execute(("sh -c %s >/dev/null 2>&1 </dev/null"):format(H.quote(
      ("memcached -l 127.0.0.1 -p %d -U 0%s >%s/log 2>&1 </dev/null & echo $! >%s/pid")
        :format(port, root, d, d))))
    local pid = tonumber((H.read_file(d .. "/pid") or ""):match("%d+"))
    assert(pid and pid > 1, "memcached did not start")
    real = { pid = pid, port = port }
    local c = H.wait_until(function() return H.connect_addr("127.0.0.1:" .. port, 1) end, 3, 0.05)
    if c then
      real.client = c
      return c
    end
    os.execute(("kill %d 2>/dev/null"):format(pid))
    real = nil
  end
  error("could not start memcached on a free port")
end

local function stop_memcached()
  if real then
    if real.client then real.client:close() end
    os.execute(("kill %d 2>/dev/null"):format(real.pid))
    H.wait_until(function() return not os.execute(("kill -0 %d 2>/dev/null"):format(real.pid)) end, 3, 0.05)
    os.execute(("kill -KILL %d 2>/dev/null"):format(real.pid))
    real = nil
  end
end

describe("examples/memcached.lua", function()
  after_each(function()
    stop_memcached()
    H.cleanup()
  end)

  it("passes --check", function()
    local rc, out = H.run({ "--check", H.root .. "/examples/memcached.lua" })
    assert.are.equal(0, rc)
    assert.matches("event style, framing line", out)
  end)

  describe("with libmemcached-tools", function()
    if not (have("memccp") and have("memccat") and have("memcrm") and have("memcslap")) then
      pending("libmemcached-tools is not installed")
      return
    end

    it("copies a file in with memccp, reads it back with memccat, removes it with memcrm", function()
      local srv = start()
      local d = H.tempdir()
      local bytes = {}
      for i = 1, 300000 do bytes[i] = string.char((i * 7919 + i // 251) % 256) end
      local data = table.concat(bytes)
      local f = assert(io.open(d .. "/blob.bin", "wb"))
      f:write(data)
      f:close()
      local out, rc = sh(("timeout 20 memccp %s --flags=42 %s/blob.bin"):format(servers(srv), d))
      assert.are.equal(0, rc, out)
      out, rc = sh(("timeout 20 memccat %s blob.bin"):format(servers(srv)))
      assert.are.equal(0, rc)
      assert.are.equal(#data + 1, #out) -- memccat ends each value with a newline
      assert.is_true(out == data .. "\n", "memccat gave other bytes back")
      local c = srv:connect()
      assert.matches("^VALUE blob.bin 42 300000\r\n", ask(c, "get blob.bin\r\n"))
      out, rc = sh(("timeout 20 memcrm %s blob.bin"):format(servers(srv)))
      assert.are.equal(0, rc, out)
      assert.are.equal("END\r\n", ask(c, "get blob.bin\r\n"))
      rc = select(2, sh(("timeout 20 memccat %s blob.bin"):format(servers(srv))))
      assert.are_not.equal(0, rc)
      rc = select(2, sh(("timeout 20 memcrm %s blob.bin"):format(servers(srv))))
      assert.are_not.equal(0, rc)
    end)

    it("runs memcslap set, get and mget loads without an error", function()
      local srv = start()
      for _, case in ipairs({
        { "set", "--concurrency=4", "Time to set%s+4000 keys by%s+4 threads" },
        { "get", "--concurrency=4", "Time to get%s+4000 keys by%s+4 threads" },
        { "mget", "--concurrency=2", "Time to mget%s+2000 keys by%s+2 threads" },
        { "set", "--concurrency=4 --noreply", "Time to set%s+4000 keys by%s+4 threads" },
      }) do
        local out, rc = sh(("timeout 60 memcslap %s --execute-number=1000 %s --test=%s")
          :format(servers(srv), case[2], case[1]))
        assert.are.equal(0, rc, out)
        assert.matches(case[3], out)
        -- memcslap exits 0 even after a failure; it prints "Fatal error ..."
        assert.is_nil(out:lower():find("error", 1, true), out)
        assert.is_nil(out:lower():find("fail", 1, true), out)
      end
      assert.is_nil(srv:stderr():find("handler error", 1, true), srv:stderr())
    end)
  end)

  describe("over a raw socket", function()
    it("answers get and gets for several keys with flags and cas uniques", function()
      local srv = start()
      local c = srv:connect()
      assert.are.equal("STORED\r\nSTORED\r\n", ask(c, "set a 5 0 3\r\nabc\r\nset b 4294967295 0 0\r\n\r\n"))
      assert.are.equal("VALUE a 5 3\r\nabc\r\nVALUE b 4294967295 0\r\n\r\nEND\r\n", ask(c, "get a missing b\r\n"))
      local ua, ub = ask(c, "gets a b\r\n"):match("^VALUE a 5 3 (%d+)\r\nabc\r\nVALUE b 4294967295 0 (%d+)\r\n\r\nEND\r\n$")
      assert.is_truthy(ua and ub and ua ~= ub)
      assert.are.equal("END\r\n", ask(c, "get x y z\r\n"))
      assert.are.equal("ERROR\r\n", ask(c, "get\r\n"))
      assert.are.equal("CLIENT_ERROR bad command line format\r\n", ask(c, "get " .. ("k"):rep(251) .. "\r\n"))
      -- a binary-safe value, in pieces as they arrive
      local v = "line\r\nwith\0bytes\r\n"
      H.send_bytewise(c, ("set bin 0 0 %d\r\n%s\r\n"):format(#v, v))
      assert.are.equal(("STORED\r\nVALUE bin 0 %d\r\n%s\r\nEND\r\n"):format(#v, v), ask(c, "get bin\r\n"))
    end)

    it("answers cas with STORED, EXISTS on a stale unique, NOT_FOUND when missing", function()
      local srv = start()
      local c = srv:connect()
      ask(c, "set k 0 0 2\r\nv1\r\n")
      local u = ask(c, "gets k\r\n"):match("^VALUE k 0 2 (%d+)\r\n")
      assert.are.equal("STORED\r\n", ask(c, ("cas k 0 0 2 %s\r\nv2\r\n"):format(u)))
      assert.are.equal("EXISTS\r\n", ask(c, ("cas k 0 0 2 %s\r\nv3\r\n"):format(u)))
      assert.are.equal("VALUE k 0 2\r\nv2\r\nEND\r\n", ask(c, "get k\r\n"))
      assert.are.equal("NOT_FOUND\r\n", ask(c, "cas nope 0 0 1 1\r\nx\r\n"))
      -- touch and the failed cas leave the unique; append changes it
      local u2 = ask(c, "gets k\r\n"):match("^VALUE k 0 2 (%d+)\r\n")
      assert.are.equal("TOUCHED\r\n", ask(c, "touch k 100\r\n"))
      assert.are.equal(u2, ask(c, "gets k\r\n"):match("^VALUE k 0 2 (%d+)\r\n"))
      assert.are.equal("STORED\r\n", ask(c, "append k 0 0 1\r\n!\r\n"))
      assert.are_not.equal(u2, ask(c, "gets k\r\n"):match("^VALUE k 0 3 (%d+)\r\n"))
      assert.are.equal("CLIENT_ERROR bad command line format\r\nERROR\r\n", ask(c, "cas k 0 0 1 abc\r\nx\r\n"))
    end)

    it("stores with add, replace, append and prepend; deletes; flushes", function()
      local srv = start()
      local c = srv:connect()
      assert.are.equal("NOT_STORED\r\n", ask(c, "replace k 0 0 1\r\nx\r\n"))
      assert.are.equal("NOT_STORED\r\nNOT_STORED\r\n", ask(c, "append k 0 0 1\r\nx\r\nprepend k 0 0 1\r\nx\r\n"))
      assert.are.equal("STORED\r\nNOT_STORED\r\n", ask(c, "add k 3 0 1\r\nb\r\nadd k 0 0 1\r\nx\r\n"))
      assert.are.equal("STORED\r\nSTORED\r\n", ask(c, "append k 9 0 1\r\nc\r\nprepend k 9 0 1\r\na\r\n"))
      assert.are.equal("VALUE k 3 3\r\nabc\r\nEND\r\n", ask(c, "get k\r\n")) -- flags kept
      assert.are.equal("STORED\r\n", ask(c, "replace k 1 0 1\r\nz\r\n"))
      assert.are.equal("VALUE k 1 1\r\nz\r\nEND\r\n", ask(c, "get k\r\n"))
      assert.are.equal("DELETED\r\nNOT_FOUND\r\n", ask(c, "delete k\r\ndelete k\r\n"))
      assert.are.equal("CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        ask(c, "delete k 5\r\n"))
      ask(c, "set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n")
      assert.are.equal("OK\r\nEND\r\n", ask(c, "flush_all\r\nget a b\r\n"))
      -- flush_all with a delay: gone once it passes
      ask(c, "set a 0 0 1\r\n1\r\n")
      assert.are.equal("OK\r\nVALUE a 0 1\r\n1\r\nEND\r\n", ask(c, "flush_all 2\r\nget a\r\n"))
      assert.is_truthy(H.wait_until(function() return ask(c, "get a\r\n") == "END\r\n" end, 3, 0.1))
      assert.are.equal("CLIENT_ERROR invalid exptime argument\r\n", ask(c, "flush_all x\r\n"))
      assert.are.equal("ERROR\r\nERROR\r\n", ask(c, "bogus\r\nGET a\r\n"))
    end)

    it("counts with incr and decr; a value that is not a number is a CLIENT_ERROR", function()
      local srv = start()
      local c = srv:connect()
      ask(c, "set n 7 0 3\r\n100\r\n")
      assert.are.equal("105\r\n", ask(c, "incr n 5\r\n"))
      assert.are.equal("99\r\n", ask(c, "decr n 6\r\n"))
      -- memcached writes a shorter number in place, padded with spaces
      assert.are.equal("VALUE n 7 3\r\n99 \r\nEND\r\n", ask(c, "get n\r\n"))
      assert.are.equal("0\r\n", ask(c, "decr n 1000\r\n"))         -- stops at 0
      assert.are.equal("18446744073709551615\r\n", ask(c, "incr n 18446744073709551615\r\n"))
      assert.are.equal("1\r\n", ask(c, "incr n 2\r\n"))            -- wraps at 2^64
      assert.are.equal("NOT_FOUND\r\n", ask(c, "incr missing 1\r\n"))
      ask(c, "set s 0 0 3\r\nabc\r\n")
      assert.are.equal("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", ask(c, "incr s 1\r\n"))
      assert.are.equal("CLIENT_ERROR invalid numeric delta argument\r\n", ask(c, "incr n -1\r\n"))
      assert.are.equal("CLIENT_ERROR invalid numeric delta argument\r\n", ask(c, "incr n 18446744073709551616\r\n"))
      assert.are.equal("ERROR\r\n", ask(c, "incr n\r\n"))
    end)

    it("says nothing to noreply commands", function()
      local srv = start()
      local c = srv:connect()
      local quiet = table.concat({
        "set a 0 0 1 noreply\r\n1\r\n",
        "add a 0 0 1 noreply\r\nx\r\n",             -- NOT_STORED, unsaid
        "append a 0 0 1 noreply\r\n0\r\n",
        "incr a 5 noreply\r\n",
        "incr s 1 noreply\r\n",                      -- NOT_FOUND, unsaid
        "touch a 100 noreply\r\n",
        "delete nope noreply\r\n",
        "cas a 0 0 1 999999 noreply\r\nx\r\n",       -- EXISTS, unsaid
        "set big 0 0 2000000 noreply\r\n" .. ("x"):rep(2000000) .. "\r\n", -- too large, unsaid
        "verbosity 1 noreply\r\n",
      })
      assert.are.equal("", ask(c, quiet))
      assert.are.equal("VALUE a 0 2\r\n15\r\nEND\r\n", ask(c, "get a\r\n"))
      assert.are.equal("", ask(c, "flush_all noreply\r\n"))
      assert.are.equal("END\r\n", ask(c, "get a\r\n"))
    end)

    it("answers a value over the limit with SERVER_ERROR, skips its data, and goes on", function()
      local srv = start()
      local c = srv:connect()
      c:setoption("tcp-nodelay", true)
      ask(c, "set k 0 0 3\r\nold\r\n")
      -- 2 MB, more than max_frame and max_inbuf: skipped as it arrives, never buffered
      H.send(c, "set k 0 0 2000000\r\n")
      assert.are.equal("SERVER_ERROR object too large for cache", H.line(c))
      local piece = ("z"):rep(65536)
      for _ = 1, 30 do H.send(c, piece) end
      H.send(c, ("z"):rep(2000000 - 30 * 65536) .. "\r\n")
      -- the next command on the same connection; a failed set leaves no stale value
      assert.are.equal("END\r\n", ask(c, "get k\r\n"))
      assert.are.equal("STORED\r\nVALUE k 0 2\r\nok\r\nEND\r\n", ask(c, "set k 0 0 2\r\nok\r\nget k\r\n"))
      -- the largest value taken, 1 MiB
      local v = ("v"):rep(1024 * 1024)
      assert.are.equal("STORED\r\n", ask(c, "set max 0 0 " .. #v .. "\r\n" .. v .. "\r\n"))
      assert.are.equal("VALUE max 0 " .. #v .. "\r\n" .. v .. "\r\nEND\r\n", ask(c, "get max\r\n"))
      local answer = ask(c, "set max 0 0 " .. (#v + 1) .. "\r\n" .. v .. "v\r\nget max\r\n")
      assert.are.equal("SERVER_ERROR object too large for cache\r\nEND\r\n", answer) -- and max is gone
      -- a data block that does not end in CRLF; its tail reads as a command
      assert.are.equal("CLIENT_ERROR bad data chunk\r\nERROR\r\n", ask(c, "set k 0 0 3\r\nabcde\r\n"))
      local log = srv:stderr()
      assert.is_nil(log:find("too large", 1, true), log)
    end)

    it("expires items: relative seconds, absolute unix time, negative", function()
      local srv = start()
      local c = srv:connect()
      local now = os.time()
      assert.are.equal(("STORED\r\n"):rep(5), ask(c, table.concat({
        "set rel 0 1 1\r\nr\r\n",
        ("set abs 0 %d 1\r\na\r\n"):format(now + 100),
        ("set past 0 %d 1\r\np\r\n"):format(now - 10),
        "set neg 0 -1 1\r\nn\r\n",
        "set kept 0 0 1\r\nk\r\n",
      })))
      assert.are.equal("VALUE rel 0 1\r\nr\r\nVALUE abs 0 1\r\na\r\nVALUE kept 0 1\r\nk\r\nEND\r\n",
        ask(c, "get rel abs past neg kept\r\n"))
      assert.are.equal("NOT_FOUND\r\n", ask(c, "touch neg 100\r\n"))
      assert.are.equal("TOUCHED\r\n", ask(c, "touch kept 1\r\n"))
      assert.is_truthy(H.wait_until(function()
        return ask(c, "get rel abs kept\r\n") == "VALUE abs 0 1\r\na\r\nEND\r\n"
      end, 4, 0.2))
      assert.are.equal("CLIENT_ERROR invalid exptime argument\r\n", ask(c, "touch abs x\r\n"))
    end)

    it("closes on quit; keeps the items across a reload", function()
      local srv = start()
      local c = srv:connect()
      ask(c, "set kept 0 0 3\r\nyes\r\n")
      H.send(c, "quit\r\nget kept\r\n")
      local err, rest = H.read_to_close(c)
      assert.are.equal("closed", err)
      assert.are.equal("", rest)
      srv:signal("HUP")
      srv:expect_log("reloaded")
      assert.are.equal("VALUE kept 0 3\r\nyes\r\nEND\r\n", ask(srv:connect(), "get kept\r\n"))
    end)

    it("refuses stores near max_lua_memory and serves reads", function()
      local srv = start({ args = { "--max-lua-memory", tostring(8 * 1024 * 1024) } })
      local c = srv:connect()
      local v = ("m"):rep(100000)
      local stored, answer = 0, nil
      for i = 1, 200 do
        answer = ask(c, ("set k%d 0 0 %d\r\n%s\r\n"):format(i, #v, v))
        if answer ~= "STORED\r\n" then break end
        stored = i
      end
      assert.are.equal("SERVER_ERROR out of memory storing object\r\n", answer)
      assert.is_true(stored > 20, "stored " .. stored)
      assert.are.equal("VALUE k1 0 " .. #v .. "\r\n" .. v .. "\r\nEND\r\n", ask(c, "get k1\r\n"))
      assert.are.equal("DELETED\r\n", ask(c, "delete k1\r\n"))
      assert.matches("^STAT uptime", ask(c, "stats\r\n"))
    end)
  end)

  describe("next to a real memcached", function()
    if not have("memcached") then
      pending("memcached is not installed")
      return
    end

    it("gives the same answers to the same commands", function()
      local srv = start()
      local theirs = start_memcached()
      local ours = srv:connect()
      theirs:setoption("tcp-nodelay", true)
      ours:setoption("tcp-nodelay", true)
      local now = os.time()
      local cases = {
        "set a 5 0 3\r\nabc\r\n",
        "get a b\r\nget a  a\r\n",
        "cas a 0 0 1 999999\r\nx\r\ncas zz 0 0 1 1\r\nx\r\n",
        "incr a 1\r\n",
        "set n 0 0 3\r\n100\r\ndecr n 1\r\nget n\r\n",
        "incr n 18446744073709551615\r\nget n\r\nincr n abc\r\nincr n -1\r\ndecr n 1000\r\n",
        "set x 0 0 3\r\n 12\r\nincr x 1\r\nset x 0 0 4\r\n5 ab\r\nincr x 1\r\nget x\r\n",
        "set x 0 0 3\r\n-12\r\nincr x 1\r\nset x 0 0 0\r\n\r\nincr x 1\r\n",
        "set big 0 0 2000000\r\n" .. ("x"):rep(2000000) .. "\r\nget big\r\n",
        "set a 0 0 3\r\nabcde\r\n",
        "get " .. ("k"):rep(251) .. "\r\n",
        "set " .. ("k"):rep(251) .. " 0 0 1\r\nx\r\n",
        "bogus\r\n\r\nget\r\nGET a\r\nset a 0 0\r\n",
        "set a x 0 1\r\nx\r\nset a 0 0 -1\r\nset a 0 0 1 2 3\r\nx\r\n",
        "set a 4294967296 0 1\r\nx\r\nget a\r\n",
        "set a 0 0 1 junk\r\nx\r\nset  a  0 0 01\r\nx\r\nget a\r\n",
        "set a 4294967295 -1 1\r\nx\r\nget a\r\ntouch a 10\r\n",
        ("set t 0 %d 1\r\nx\r\nset u 0 %d 1\r\ny\r\nget t u\r\n"):format(now + 100, now - 100),
        "set t 0 2592001 1\r\nx\r\nget t\r\n",
        "set a 0 0 1\r\nx\r\ntouch a abc\r\ntouch a 1 2\r\ntouch a 1 2 3\r\ntouch zz 1\r\n",
        "delete a\r\ndelete a\r\ndelete a 0\r\ndelete a 5\r\ndelete a b c d\r\n",
        "append nope 0 0 1\r\nx\r\nprepend nope 0 0 1\r\nx\r\nadd n 0 0 1\r\nx\r\nreplace q 0 0 1\r\nx\r\n",
        "set a 0 0 1\r\nx\r\nappend a 7 0 1\r\ny\r\nprepend a 7 0 1\r\nz\r\nget a\r\n",
        "set a 0 0 1 noreply\r\nx\r\nincr a 1 noreply\r\ndelete zz noreply\r\nget a\r\n",
        "flush_all noreply\r\nflush_all 0\r\nflush_all x\r\nget a n\r\n",
        "set a 0 0 1\r\nx\r\nflush_all 1\r\nget a\r\n",
        "verbosity 1\r\nverbosity\r\nverbosity x\r\nverbosity -1\r\nflush_all -1\r\n",
        "stats nosuch\r\n",
        "set a 0 0 1\nx\r\nget a\n",                 -- a bare LF ends a command line
        "set a\t0 0 1\r\nx\r\n",                      -- only spaces separate
      }
      for _, req in ipairs(cases) do
        assert.are.equal(ask(theirs, req), ask(ours, req), req:sub(1, 80))
      end
    end)
  end)
end)
