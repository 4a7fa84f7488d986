-- spec/work_spec.lua: hs.exec, hs.fs.* and hs.resolve: work a script waits
-- for without blocking the loop, in both styles (a handle coroutine yields;
-- elsewhere a callback runs later under the handler budget).
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

-- Coroutine style: each line is a command; results come back as one line.
-- Reports that outlive the connection go to stderr as "@@ ..." lines.
local CORO = [==[
local hs = require "hotsock"
local dir = arg[1]

local function log(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  io.stderr:write("@@ ", table.concat(t, " "), "\n")
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function result(r, err, partial)
  if not r then
    local p = partial and ("%d %d %d %d"):format(partial.status, partial.signal,
      #partial.stdout, #partial.stderr) or "-"
    return "ERR " .. tostring(err) .. " | " .. p
  end
  return ("OK %d %d [%s] [%s]"):format(r.status, r.signal, hex(r.stdout), hex(r.stderr))
end

local cmds = {}

function cmds.echo(conn)
  return result(hs.exec({ "sh", "-c", "printf 'out\\n'; printf 'err' >&2; exit 3" }))
end

function cmds.args(conn)
  -- no shell: each element is one argument, spaces and quotes included
  return result(hs.exec({ "printf", "%s|", "a b", "'c'", "$HOME", 42 }))
end

function cmds.shell(conn, rest)
  return result(hs.exec(rest, { shell = true }))
end

function cmds.stdin(conn, n)
  local data = {}
  for i = 1, tonumber(n) do data[i] = string.char(i % 256) end
  data = table.concat(data)
  local r, err = hs.exec({ "cat" }, { stdin = data })
  if not r then return "ERR " .. tostring(err) end
  return ("SAME %s %d %d"):format(tostring(r.stdout == data), #r.stdout, r.status)
end

function cmds.slow(conn, secs)
  conn:send("started\n")
  local t0 = hs.now()
  local r, err = hs.exec({ "sleep", secs })
  log("SLOWDONE", conn.id, r and r.status, err, conn.closed)
  return ("%s %d"):format(result(r, err), math.floor(hs.now() - t0))
end

function cmds.timeout(conn)
  local t0 = hs.now()
  local r, err, partial = hs.exec({ "sh", "-c", "echo begun; exec sleep 30" }, { timeout = 200 })
  return ("%s %s %d"):format(result(r, err, partial), partial and hex(partial.stdout) or "-",
    math.floor(hs.now() - t0))
end

function cmds.fraction(conn)
  -- a fractional time-out rounds up to 1 ms, never to "no time-out"
  local r, err = hs.exec({ "sleep", "5" }, { timeout = 0.5 })
  return tostring(r) .. " " .. tostring(err)
end

function cmds.wrapped(conn)
  -- inside a coroutine that is not handle's, a call that cannot wait raises
  local ok, err = coroutine.wrap(function()
    return pcall(hs.exec, { "true" })
  end)()
  return tostring(ok) .. " " .. tostring(err):match("needs a callback") or tostring(err)
end

function cmds.cap(conn)
  local r, err, partial = hs.exec({ "yes" }, { max_output = 1000 })
  return result(r, err, partial)
end

function cmds.missing(conn)
  return result(hs.exec({ "/nonexistent/program" }))
end

function cmds.ping(conn) return "pong" end

function cmds.fs(conn)
  local p = dir .. "/data.bin"
  local blob = "a\0b\r\n" .. string.rep("x", 100000)
  local out = {}
  out[#out + 1] = tostring(hs.fs.writefile(p, blob))
  out[#out + 1] = tostring(hs.fs.appendfile(p, "tail"))
  local d, err = hs.fs.readfile(p)
  out[#out + 1] = tostring(d == blob .. "tail")
  local st = assert(hs.fs.stat(p))
  out[#out + 1] = ("%s %d %o %s"):format(st.type, st.size, st.mode,
    tostring(math.abs(st.mtime - os.time()) < 60))
  out[#out + 1] = assert(hs.fs.stat(dir)).type
  out[#out + 1] = tostring(hs.fs.writefile(p, ""))
  out[#out + 1] = ("[%s]"):format(assert(hs.fs.readfile(p)))
  out[#out + 1] = tostring(hs.fs.appendfile(dir .. "/new.txt", "fresh"))
  out[#out + 1] = assert(hs.fs.readfile(dir .. "/new.txt"))
  return table.concat(out, " ")
end

function cmds.fserr(conn)
  local out = {}
  out[#out + 1] = table.concat({ tostring(select(1, hs.fs.readfile(dir .. "/nope"))),
    select(2, hs.fs.readfile(dir .. "/nope")) }, ",")
  out[#out + 1] = select(2, hs.fs.stat(dir .. "/nope"))
  out[#out + 1] = select(2, hs.fs.writefile(dir .. "/no/such/dir/f", "x"))
  out[#out + 1] = select(2, hs.fs.readfile(dir))
  return table.concat(out, " | ")
end

function cmds.fifo(conn)
  conn:send("reading\n")
  local d, err = hs.fs.readfile(dir .. "/fifo")
  return tostring(d or err)
end

function cmds.fsbusy(conn, n)
  local p, done = dir .. "/big", 0
  for i = 1, tonumber(n) do -- callbacks: they keep the pool busy
    assert(hs.fs.readfile(p, function(d)
      done = done + 1
      if done == tonumber(n) then log("BUSY", done, "done") end
    end))
  end
  conn:send("reading\n")
  local d, err = hs.fs.readfile(p) -- queued behind them
  log("BUSYDONE", conn.id, d and #d, err)
  return "read " .. tostring(d and #d)
end

function cmds.resolve(conn, name)
  local list, err = hs.resolve(name)
  if not list then return "ERR " .. tostring(err) end
  return "OK " .. table.concat(list, ",")
end

function cmds.cbinside(conn)
  -- a callback given inside handle: returns at once, the callback runs later
  local r = hs.exec({ "echo", "cb" }, { callback = function(res, err)
    conn:send("callback ", res and res.stdout or tostring(err))
  end })
  return "returned " .. tostring(r)
end

return {
  framing = "line",
  timeouts = { idle = tonumber(arg[2]) or 0 },
  handle = function(conn)
    while true do
      local line = conn:receive("*l")
      if not line then return end
      local cmd, rest = line:match("^(%S+)%s*(.*)$")
      local ok, res = pcall(cmds[cmd], conn, rest)
      if conn.closed then return end
      conn:send(ok and res or ("RAISED " .. tostring(res)), "\n")
    end
  end,
  on_close = function(conn, reason) log("CLOSED", conn.id, reason) end,
}
]==]

-- Event style: the same work through callbacks.
local EVENTS = [==[
local hs = require "hotsock"
local dir = arg[1]
local pending = 0
return {
  framing = "line",
  handler_budget = 100,
  on_message = function(conn, line)
    local cmd, rest = line:match("^(%S+)%s*(.*)$")
    if cmd == "exec" then
      local r = hs.exec({ "sh", "-c", "cat; echo done" }, { stdin = rest, callback = function(res, err)
        conn:send("exec ", res and (res.stdout:gsub("\n", "/")) or tostring(err), "\n")
      end })
      conn:send("returned ", tostring(r), "\n")
    elseif cmd == "slow" then
      hs.exec({ "sleep", rest }, { callback = function(res)
        conn:send("slow done ", tostring(res.status), "\n")
      end })
    elseif cmd == "fs" then
      local p = dir .. "/ev.txt"
      hs.fs.writefile(p, rest, function(ok, err)
        hs.fs.appendfile(p, "!", function(ok2)
          hs.fs.readfile(p, function(d, err3)
            hs.fs.stat(p, function(st)
              conn:send("fs ", tostring(ok), " ", tostring(ok2), " ", tostring(d), " ",
                st.type, " ", tostring(st.size), "\n")
            end)
          end)
        end)
      end)
    elseif cmd == "missing" then
      hs.fs.readfile(dir .. "/missing", function(d, err) conn:send("missing ", tostring(d), " ", err, "\n") end)
    elseif cmd == "resolve" then
      hs.resolve(rest, function(list, err)
        conn:send("resolve ", list and table.concat(list, ",") or ("ERR " .. tostring(err)), "\n")
      end)
    elseif cmd == "nocb" then
      local ok, err = pcall(hs.fs.readfile, dir .. "/x")
      conn:send("nocb ", tostring(ok), " ", tostring(err), "\n")
    elseif cmd == "spin" then
      hs.exec({ "true" }, { callback = function() while true do end end })
    elseif cmd == "fire" then
      -- no callback: fire and forget
      conn:send("fire ", tostring(hs.exec({ "sh", "-c", "echo fired > " .. dir .. "/fired" })), "\n")
    elseif cmd == "bg" then
      hs.exec({ "sleep", "30.5" }, { timeout = 60000, callback = function() io.stderr:write("@@ bg called back\n") end })
      conn:send("bg\n")
    elseif cmd == "ping" then
      conn:send("pong\n")
    end
  end,
  on_shutdown = function()
    local r, err = hs.exec({ "true" }, { callback = function() end })
    local r2, err2 = hs.fs.stat("/", function() end)
    io.stderr:write("@@ shutdown ", tostring(r), " ", tostring(err), " ", tostring(r2), " ",
      tostring(err2), "\n")
  end,
}
]==]

local function ask(c, line)
  H.send(c, line .. "\n")
  return H.line(c)
end

local function hex(s)
  return (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

-- a client whose close() sends a reset: the server hears of it at once,
-- even while the coroutine is not reading
local function reset(c)
  c:setoption("linger", { on = true, timeout = 0 })
  c:close()
end

describe("hs.exec", function()
  after_each(H.cleanup)

  it("inside handle: waits and returns status, signal, stdout and stderr", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal(("OK 3 0 [%s] [%s]"):format(hex("out\n"), hex("err")), ask(c, "echo"))
    -- a list is the argument vector: no shell, no splitting, no expansion
    assert.are.equal(("OK 0 0 [%s] []"):format(hex("a b|'c'|$HOME|42|")), ask(c, "args"))
    -- opts.shell runs a string through /bin/sh -c
    assert.are.equal(("OK 0 0 [%s] []"):format(hex("3\n")), ask(c, "shell echo $((1 + 2))"))
    assert.are.equal(("OK 7 0 [] []"):format(), ask(c, "shell exit 7"))
    -- a program that cannot start: nil, err at once
    assert.are.equal("ERR ENOENT: no such file or directory | -", ask(c, "missing"))
    assert.are.equal(0, srv:stop())
  end)

  it("feeds opts.stdin to the program", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("SAME true 5 0", ask(c, "stdin 5"))
    -- larger than a pipe's buffer: written while its output is read
    assert.are.equal("SAME true 300000 0", ask(c, "stdin 300000"))
    assert.are.equal(0, srv:stop())
  end)

  it("does not block the loop: another client is served while one waits", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local a = srv:connect()
    assert.are.equal("started", ask(a, "slow 1"))
    local b = srv:connect()
    local t0 = socket.gettime()
    assert.are.equal("pong", ask(b, "ping"))
    assert.are.equal("pong", ask(b, "ping"))
    assert.is_true(socket.gettime() - t0 < 0.5, "a ping waited for the program")
    local l = assert(H.line(a))
    local ms = tonumber(l:match(" (%d+)$"))
    assert.truthy(l:match("^OK 0 0 %[%] %[%] %d+$"), l)
    assert.is_true(ms >= 900, "sleep 1 returned after " .. ms .. " ms")
    assert.are.equal(0, srv:stop())
  end)

  it("kills the program at opts.timeout and says timeout", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    local l = ask(c, "timeout")
    -- nil, "timeout", and the result so far: killed by SIGKILL, what it wrote
    local partial, out, ms = l:match("^ERR timeout | (%d+ %d+ %d+ %d+) (%x+) (%d+)$")
    assert.truthy(partial, l)
    assert.are.equal("0 9 6 0", partial)
    assert.are.equal(hex("begun\n"), out)
    assert.is_true(tonumber(ms) >= 150 and tonumber(ms) < 2000, "timed out after " .. ms .. " ms")
    assert.are.equal(0, srv:stop())
  end)

  it("a fractional opts.timeout still times out, and a call in a foreign coroutine without a callback raises", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("nil timeout", ask(c, "fraction"))
    assert.are.equal("false needs a callback", ask(c, "wrapped"))
    assert.are.equal(0, srv:stop())
  end)

  it("kills the program when its output passes opts.max_output", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    -- `yes` never ends; it is killed with 1000 bytes kept
    assert.are.equal("ERR output too large | 0 9 1000 0", ask(c, "cap"))
    assert.are.equal("pong", ask(c, "ping"))
    assert.are.equal(0, srv:stop())
  end)

  it("a connection reset while its coroutine waits gets on_close; the later end does nothing", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local a = srv:connect()
    assert.are.equal("started", ask(a, "slow 1"))
    reset(a)
    -- on_close runs at once, not when the program ends
    local reason = srv:expect_log("@@ CLOSED %d+ (%S+)\n", 0.8)
    assert.are.equal("reset", reason)
    -- the coroutine was woken by the close: nil, "closed" (the peer's end)
    assert.truthy(srv:stderr():find("@@ SLOWDONE %d+ nil closed true"), srv:stderr())
    socket.sleep(1.3) -- the program ends; nobody is told
    local b = srv:connect()
    assert.are.equal("pong", ask(b, "ping"))
    assert.are.equal(1, srv:count_log("@@ SLOWDONE", true))
    assert.are.equal(0, srv:stop())
    assert.is_nil(srv:stderr():find(" error ", 1, true), srv:stderr())
  end)

  it("a connection closed by its idle timeout while waiting gets on_close", function()
    local srv = H.start(CORO, { script_args = { H.tempdir(), "300" } })
    local a = srv:connect()
    assert.are.equal("started", ask(a, "slow 1"))
    assert.are.equal("idle", srv:expect_log("@@ CLOSED %d+ (%S+) timeout\n", 0.9))
    assert.is_nil(H.line(a))
    socket.sleep(1)
    local b = srv:connect()
    assert.are.equal("pong", ask(b, "ping"))
    assert.are.equal(0, srv:stop())
  end)

  it("a callback given inside handle makes it return at once", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("returned true", ask(c, "cbinside"))
    assert.are.equal("callback cb", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("event style: returns at once and calls opts.callback later", function()
    local d = H.tempdir()
    local srv = H.start(EVENTS, { script_args = { d } })
    local c = srv:connect()
    H.send(c, "slow 1\n")
    assert.are.equal("returned true", ask(c, "exec hello"))
    assert.are.equal("exec hellodone/", H.line(c))
    local t0 = socket.gettime()
    assert.are.equal("pong", ask(c, "ping"))
    assert.is_true(socket.gettime() - t0 < 0.5)
    assert.are.equal("slow done 0", H.line(c))
    assert.are.equal("fire true", ask(c, "fire"))
    assert.truthy(H.wait_until(function() return H.read_file(d .. "/fired") == "fired\n" end))
    assert.are.equal(0, srv:stop())
  end)

  it("a callback runs under handler_budget", function()
    local srv = H.start(EVENTS, { script_args = { H.tempdir() } })
    local c = srv:connect()
    H.send(c, "spin\n")
    srv:expect_log("hs.exec callback exceeded handler_budget")
    assert.are.equal("pong", ask(c, "ping"))
    assert.are.equal(0, srv:stop())
  end)

  it("refuses to start during a stop, and kills running programs at the stop", function()
    local srv = H.start(EVENTS, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("bg", ask(c, "bg"))
    local function running()
      local f = io.popen("pgrep -f 'sleep 30[.]5' 2>/dev/null | wc -l")
      local n = tonumber(f:read("a"))
      f:close()
      return n
    end
    assert.truthy(H.wait_until(function() return running() >= 1 end))
    local t0 = socket.gettime()
    assert.are.equal(0, srv:stop())
    assert.is_true(socket.gettime() - t0 < 3, "the stop waited for the program")
    assert.truthy(srv:stderr():find("@@ shutdown nil stopping nil stopping", 1, true), srv:stderr())
    assert.is_nil(srv:stderr():find("@@ bg called back", 1, true))
    assert.truthy(H.wait_until(function() return running() == 0 end), "the program outlived the server")
  end)

  it("a stop while a coroutine waits on a program ends promptly", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("started", ask(c, "slow 20"))
    local t0 = socket.gettime()
    assert.are.equal(0, srv:stop())
    assert.is_true(socket.gettime() - t0 < 3)
    assert.truthy(srv:stderr():find("@@ SLOWDONE %d+ nil shutdown"), srv:stderr())
  end)

  it("counts what it holds toward max_lua_memory", function()
    local d = H.tempdir()
    local big = assert(io.open(d .. "/big", "wb"))
    big:write(string.rep("z", 16 * 1024 * 1024))
    big:close()
    local srv = H.start([[
local hs = require "hotsock"
return {
  max_lua_memory = 8 * 1024 * 1024,
  handle = function(conn)
    conn:receive("*l")
    local r, err = hs.exec({ "head", "-c", "20000000", "/dev/zero" }, { max_output = 64 * 1024 * 1024 })
    conn:send(tostring(r), " ", tostring(err), "\n")
    local d, err2 = hs.fs.readfile(arg[1])
    conn:send(tostring(d), " ", tostring(err2), "\n")
    conn:receive("*l")
  end,
}
]], { script_args = { d .. "/big" } })
    local c = srv:connect()
    assert.are.equal("nil not enough memory (max_lua_memory)", ask(c, "go"))
    assert.are.equal("nil not enough memory (max_lua_memory)", H.line(c))
    assert.are.equal(0, srv:stop())
  end)
end)

describe("hs.fs", function()
  after_each(H.cleanup)

  it("inside handle: writefile, appendfile, readfile and stat round trip", function()
    local d = H.tempdir()
    local srv = H.start(CORO, { script_args = { d } })
    local c = srv:connect()
    assert.are.equal("true true true file 100009 644 true directory true [] true fresh", ask(c, "fs"))
    assert.are.equal("fresh", H.read_file(d .. "/new.txt"))
    assert.are.equal(0, srv:stop())
  end)

  it("errors are nil, 'ENOENT: no such file or directory' style messages", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    assert.are.equal("nil,ENOENT: no such file or directory | ENOENT: no such file or directory"
      .. " | ENOENT: no such file or directory | EISDIR: illegal operation on a directory",
      ask(c, "fserr"))
    assert.are.equal(0, srv:stop())
  end)

  it("event style: a callback as the last argument; without one it raises", function()
    local d = H.tempdir()
    local srv = H.start(EVENTS, { script_args = { d } })
    local c = srv:connect()
    assert.are.equal("fs true true hi! file 3", ask(c, "fs hi"))
    assert.are.equal("missing nil ENOENT: no such file or directory", ask(c, "missing"))
    local l = ask(c, "nocb")
    assert.truthy(l:find("nocb false", 1, true) and l:find("give a callback", 1, true), l)
    assert.are.equal(0, srv:stop())
  end)

  it("a connection reset while its coroutine waits on a read gets on_close; the later end does nothing", function()
    local d = H.tempdir()
    local f = assert(io.open(d .. "/big", "wb"))
    f:write(string.rep("0123456789abcdef", 512 * 1024)) -- 8 MiB
    f:close()
    -- one pool thread, kept busy: the coroutine's read waits behind 40 others
    local srv = H.start(CORO, { script_args = { d }, env = { UV_THREADPOOL_SIZE = "1" } })
    local a = srv:connect()
    assert.are.equal("reading", ask(a, "fsbusy 40"))
    reset(a)
    assert.are.equal("reset", srv:expect_log("@@ CLOSED %d+ (%S+)\n"))
    -- woken by the close, not by the read
    assert.truthy(srv:stderr():find("@@ BUSYDONE %d+ nil closed"), srv:stderr())
    local b = srv:connect()
    assert.are.equal("pong", ask(b, "ping"))
    -- the queue drains; the read that nobody waits for any more tells nobody
    srv:expect_log("@@ BUSY 40 done", 10, true)
    socket.sleep(0.1)
    assert.are.equal("pong", ask(b, "ping"))
    assert.are.equal(1, srv:count_log("@@ BUSYDONE", true))
    assert.are.equal(0, srv:stop())
    assert.is_nil(srv:stderr():find(" error ", 1, true), srv:stderr())
  end)

  it("never waits for another program: a FIFO without a writer reads as empty", function()
    local d = H.tempdir()
    assert.is_true(os.execute("mkfifo " .. H.quote(d .. "/fifo")))
    local srv = H.start(CORO, { script_args = { d } })
    local a = srv:connect()
    assert.are.equal("reading", ask(a, "fifo"))
    assert.are.equal("", H.line(a))
    assert.are.equal(0, srv:stop())
  end)
end)

describe("hs.resolve", function()
  after_each(H.cleanup)

  it("looks localhost up without blocking, in both styles", function()
    local srv = H.start(CORO, { script_args = { H.tempdir() } })
    local c = srv:connect()
    local l = ask(c, "resolve localhost")
    assert.truthy(l:match("^OK ") and (l:find("127.0.0.1", 1, true) or l:find("::1", 1, true)), l)
    assert.are.equal("OK 10.1.2.3", ask(c, "resolve 10.1.2.3"))
    -- a name that cannot be looked up: nil, "CODE: text"
    local e = ask(c, "resolve ")
    assert.truthy(e:match("^ERR [%u_]+: %l"), e)
    assert.are.equal(0, srv:stop())

    local srv2 = H.start(EVENTS, { script_args = { H.tempdir() } })
    local c2 = srv2:connect()
    local l2 = ask(c2, "resolve localhost")
    assert.truthy(l2:find("127.0.0.1", 1, true) or l2:find("::1", 1, true), l2)
    assert.are.equal(0, srv2:stop())
  end)
end)
