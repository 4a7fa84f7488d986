-- spec/deploy_spec.lua: the set-up docs/deploy.md describes, end to end.
-- HAProxy 2.6 (mode tcp, roundrobin, send-proxy-v2, HTTP health checks
-- against each instance's health listener) in front of two hotsock
-- instances of one script, which keeps its state in a real redis-server.
-- Clients talk to HAProxy only. One instance is stopped with SIGTERM in
-- the middle of steady traffic: with stop_grace its health checks fail
-- first, HAProxy sends new connections to the other one, and no request
-- is lost or counted twice.
--
-- Everything runs on 127.0.0.1. hotsock listens on port 0 (the ports are
-- read from its "listening on" lines), HAProxy's frontend on a port found
-- free by binding and closing a socket, redis-server likewise. HAProxy
-- (under `timeout`, which passes a SIGTERM on) and redis-server run in the
-- foreground and are stopped by their PIDs; the hotsock instances are
-- spec/helper.lua's, stopped by PID in H.cleanup.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
package.path = H.root .. "/lua/?.lua;" .. package.path
local WB = require "hotsock.workbench"
local socket = require "socket"

local HAPROXY = os.getenv("HOTSOCK_HAPROXY") or "/usr/sbin/haproxy"
local ENV = { HOTSOCK_LUA_PATH = H.root .. "/lua/?.lua" }

local CHECK_INTER = 200             -- HAProxy's check interval, ms
local STOP_GRACE = 3 * CHECK_INTER  -- three checks see "draining" before the stop

local have = H.have

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1", "r"))
  local out = f:read("a")
  f:close()
  return out
end

-- A free TCP port on 127.0.0.1 (bound, read, released).
local free_port = H.free_port

local function cli(port, ...)
  local parts = { "timeout 10 redis-cli -h 127.0.0.1 -p", tostring(port) }
  for _, a in ipairs({ ... }) do parts[#parts + 1] = H.quote(a) end
  return (sh(table.concat(parts, " ")):gsub("\n$", ""))
end

---------------------------------------------------------------------------
-- the script both instances run
---------------------------------------------------------------------------

-- hotsock SCRIPT NAME REDIS_PORT KEY
--   "INCR\n" -> "N NAME"    (N: KEY incremented in Redis)
--   "WHO\n"  -> "PEER NAME" (PEER: conn.peer, the client's address)
-- NAME is the instance's name, with "/W" (the worker) under --workers.
-- Once a stop was asked for (hs.stopping(), during stop_grace) each answer
-- ends in " close" and the connection is closed after it, so a client
-- that keeps its connection open opens a new one, which HAProxy sends to
-- an instance still up (the clients here send one request at a time and
-- wait for its answer).
local SCRIPT = [[
local hs = require "hotsock"
local redis = require "hotsock.redis"
local name, rport, key = arg[1], tonumber(arg[2]), arg[3]
if hs.workers() > 1 then name = name .. "/" .. hs.worker() end

local r -- one Redis client for every connection of this process
local function db()
  if not r then r = redis.connect({ port = rport, timeout = 5000 }, function() end) end
  return r
end

local function answer(conn, text)
  if hs.stopping() then
    conn:send(text, " close\n")
    conn:close()
  else
    conn:send(text, "\n")
  end
end

return {
  listen = {
    { addr = "127.0.0.1:0", proxy_protocol = true }, -- from HAProxy only
    { addr = "127.0.0.1:0", health = true },         -- HAProxy's checks
  },
  stop_grace = @GRACE@,     -- ms of failing health checks before the stop
  drain_timeout = 10000,
  framing = "line",
  on_message = function(conn, line)
    if line == "INCR" then
      db():incr(key, function(n, err)
        if n then answer(conn, n .. " " .. name)
        else answer(conn, "ERR " .. tostring(err) .. " " .. name) end
      end)
    elseif line == "WHO" then
      answer(conn, conn.peer .. " " .. name)
    else
      answer(conn, "ERR unknown command " .. name)
    end
  end,
}
]]

---------------------------------------------------------------------------
-- HAProxy
---------------------------------------------------------------------------

local haproxy = require "haproxy_stats"
local haproxy_cmd, haproxy_stat = haproxy.cmd, haproxy.stat

-- The two ports of an instance: PROXY listener, health listener.
local function ports(srv)
  return tonumber(srv.addrs[1]:match(":(%d+)$")), tonumber(srv.addrs[2]:match(":(%d+)$"))
end

local function haproxy_config(fp, sock, a, b)
  local pa, ha = ports(a)
  local pb, hb = ports(b)
  return table.concat({
    "global",
    "  stats socket " .. sock .. " level admin",
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    -- without it a check must be done within `inter`: one slow answer on
    -- a busy machine (fall 1) would take a healthy server out
    "  timeout check 2s",
    "  retries 3",
    "  option redispatch",
    "frontend fe",
    "  bind 127.0.0.1:" .. fp,
    "  default_backend hotsock",
    "backend hotsock",
    "  balance roundrobin",
    "  option httpchk GET /health",
    "  http-check expect status 200",
    ("  server a 127.0.0.1:%d send-proxy-v2 check port %d inter %d fall 1 rise 1"):format(pa, ha, CHECK_INTER),
    ("  server b 127.0.0.1:%d send-proxy-v2 check port %d inter %d fall 1 rise 1"):format(pb, hb, CHECK_INTER),
  }, "\n") .. "\n"
end

local haproxies = {} -- started and not stopped yet

local function stop_haproxies()
  local list = haproxies
  haproxies = {}
  for _, hap in ipairs(list) do hap.proc:stop(5) end
end

-- Start HAProxy in front of a and b; returns once both pass their checks.
local function start_haproxy(a, b)
  local d = H.tempdir()
  local hap = { sock = d .. "/admin.sock", fp = free_port() }
  hap.cfg = haproxy_config(hap.fp, hap.sock, a, b)
  local f = assert(io.open(d .. "/haproxy.cfg", "w"))
  f:write(hap.cfg)
  f:close()
  -- under `timeout` in case the spec dies without stopping it
  hap.proc = WB.spawn({ "timeout", "-k", "2", "120", HAPROXY, "-db", "-f", d .. "/haproxy.cfg" })
  haproxies[#haproxies + 1] = hap
  local ok = H.wait_until(function()
    if hap.proc:exit_code() then return "exited" end
    local st = haproxy_stat(hap)
    local function up(row)
      return row and row.status == "UP" and row.check_status:gsub("^%* ", "") == "L7OK"
    end
    return up(st["hotsock/a"]) and up(st["hotsock/b"]) and "up"
  end, 15, 0.05)
  assert(ok == "up", "HAProxy did not come up with both servers checked:\n" .. hap.cfg
    .. hap.proc:stderr():sub(-3000))
  return hap
end

---------------------------------------------------------------------------
-- clients: coroutines over non-blocking sockets
---------------------------------------------------------------------------

-- Read one line from c (timeout 0) inside a task: yields until readable.
local function read_line(c, deadline)
  local acc = ""
  while true do
    local line, err, partial = c:receive("*l", acc)
    if line then return line end
    if err ~= "timeout" then return nil, err, partial end
    acc = partial or acc
    if socket.gettime() > deadline then return nil, "no answer within 10 s", acc end
    coroutine.yield(c)
  end
end

-- One request on `c` (connecting a new socket when nil): the answer line,
-- or nil and why. Connecting to HAProxy on loopback does not wait on the
-- backends, so a short blocking connect is fine.
local function request(port, c, req)
  if not c then
    local err
    c = socket.tcp()
    c:settimeout(3)
    local ok
    ok, err = c:connect("127.0.0.1", port)
    if not ok then c:close() return nil, "connect: " .. tostring(err) end
    c:settimeout(0)
  end
  local ok, err = c:send(req)
  if not ok then c:close() return nil, "send: " .. tostring(err) end
  local line, rerr, partial = read_line(c, socket.gettime() + 10)
  if not line then
    c:close()
    return nil, ("receive: %s (partial %q)"):format(tostring(rerr), partial or "")
  end
  return line, c
end

-- Drive INCR traffic through HAProxy on `port` with `once` clients (a new
-- connection per request) and `keep` clients (one connection for many
-- requests; a new one after an answer that ends in " close", and after
-- every 10 requests so that they spread over the servers). Each client
-- pauses PAUSE s between requests. `control(t)` is called between rounds;
-- once it returns true no new request starts and the ones under way
-- finish. Returns t: requests, ok (the numbers answered, in order), by
-- (answers per instance name), fails (what went wrong, per failure),
-- closes (answers that said close).
local PAUSE = 0.01

local function traffic(port, once, keep, control)
  local t = { requests = 0, ok = {}, by = {}, fails = {}, closes = 0, current = {} }
  local done = false
  -- the instance that answered and whether it said close; nil on failure
  local function record(kind, line, why)
    t.requests = t.requests + 1
    local n, who, close
    if line then n, who, close = line:match("^(%d+) (%S+)(.*)$") end
    if not n or (close ~= "" and close ~= " close") then
      t.fails[#t.fails + 1] = kind .. ": " .. (line and ("answer %q"):format(line) or why)
      return nil
    end
    t.ok[#t.ok + 1] = tonumber(n)
    t.by[who] = (t.by[who] or 0) + 1
    if close ~= "" then t.closes = t.closes + 1 end
    return who, close ~= ""
  end
  local function pause() coroutine.yield(socket.gettime() + PAUSE) end
  local tasks = {}
  for _ = 1, once do
    tasks[#tasks + 1] = coroutine.create(function()
      while not done do
        local line, c = request(port, nil, "INCR\n")
        record("once", line, c)
        if line then c:close() end
        pause()
      end
    end)
  end
  for i = 1, keep do
    tasks[#tasks + 1] = coroutine.create(function()
      local c, uses = nil, 0
      while not done do
        local line, c2 = request(port, c, "INCR\n")
        local who, close = record("keep", line, c2)
        if not line then
          c, uses = nil, 0 -- request() closed it
        else
          c, uses = c2, uses + 1
          if close or uses >= 10 then c:close() c, uses = nil, 0 end
        end
        t.current[i] = c and who or nil -- the instance this client holds a connection to
        pause()
      end
      if c then c:close() end
    end)
  end
  -- what each task waits for: a socket to read, or a time to wake up
  local waiting = {}
  local function resume(co)
    local ok, w = coroutine.resume(co)
    assert(ok, w)
    waiting[co] = w
  end
  local limit = socket.gettime() + 60
  while true do
    local alive, recvt, owner, now = 0, {}, {}, socket.gettime()
    for _, co in ipairs(tasks) do
      if coroutine.status(co) == "suspended" then
        alive = alive + 1
        local w = waiting[co]
        if type(w) == "number" then
          if w <= now then waiting[co] = nil end
        elseif w then
          recvt[#recvt + 1] = w
          owner[w] = co
        end
      end
    end
    if alive == 0 then break end
    assert(now < limit, "the traffic did not end within 60 s")
    for _, co in ipairs(tasks) do
      if coroutine.status(co) == "suspended" and waiting[co] == nil then resume(co) end
    end
    -- wait a little for a socket to become readable, then let every task
    -- waiting on one try its read (one past its deadline gives up)
    if #recvt > 0 then socket.select(recvt, nil, 0.005) else socket.sleep(0.002) end
    for _, s in ipairs(recvt) do resume(owner[s]) end
    if not done and control(t) then done = true end
  end
  return t
end

-- The numbers answered are exactly 1..N, each once.
local function check_sequence(ok)
  local sorted = {}
  for i, n in ipairs(ok) do sorted[i] = n end
  table.sort(sorted)
  for i, n in ipairs(sorted) do
    if n ~= i then
      return false, ("answer %d of %d is %d (a gap or a duplicate)"):format(i, #sorted, n)
    end
  end
  return true
end

---------------------------------------------------------------------------

describe("several instances behind HAProxy", function()
  if not (have("redis-server") and have("redis-cli")) then
    pending("redis-server and redis-cli are not installed")
    return
  end
  local f = io.open(HAPROXY, "rb")
  if not f then
    pending("haproxy is not installed")
    return
  end
  f:close()

  local redis_proc, rport
  local keys = 0

  setup(function()
    rport = free_port()
    redis_proc = WB.spawn({ "redis-server", "--port", tostring(rport), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no" })
    local ok = H.wait_until(function() return cli(rport, "PING") == "PONG" end, 10, 0.02)
    assert(ok, "redis-server did not start: " .. redis_proc:stdout() .. redis_proc:stderr())
  end)

  teardown(function()
    if redis_proc then redis_proc:stop(5) end
  end)

  after_each(function()
    stop_haproxies()
    H.cleanup()
  end)

  -- An instance named `name` counting in `key`; opts.workers: --workers N.
  local function instance(name, key, opts)
    opts = opts or {}
    return H.start(SCRIPT:gsub("@GRACE@", tostring(STOP_GRACE)), {
      listen = false,
      expect_listeners = 2,
      env = ENV,
      args = opts.workers and { "--workers", tostring(opts.workers) } or nil,
      script_args = { name, tostring(rport), key },
    })
  end

  local function new_key()
    keys = keys + 1
    return ("deploy:%d:%d"):format(math.floor(socket.gettime() * 1000), keys)
  end

  it("both instances see the client's own address through HAProxy (PROXY v2)", function()
    local key = new_key()
    local a, b = instance("a", key), instance("b", key)
    local hap = start_haproxy(a, b)
    local seen = {}
    for _ = 1, 20 do
      local c = assert(H.connect_addr("127.0.0.1:" .. hap.fp))
      local ip, port = c:getsockname()
      H.send(c, "WHO\n")
      local line = H.line(c)
      c:close()
      local peer, who = (line or ""):match("^(%S+) (%S+)$")
      assert.are.equal(ip .. ":" .. port, peer, line)
      seen[who] = true
      if seen.a and seen.b then break end
    end
    assert.are.same({ a = true, b = true }, seen)
    -- HAProxy's checks went to the health listeners, never to the script
    assert.is_nil(a:stderr():find("PROXY header", 1, true), a:stderr())
    assert.is_nil(b:stderr():find("PROXY header", 1, true), b:stderr())
  end)

  -- Steady INCR traffic; SIGTERM to a once both answer; on until a has
  -- exited and b has answered 200 more on its own.
  local function rolling_stop(opts)
    local key = new_key()
    local a = instance("a", key, { workers = opts.a_workers })
    local b = instance("b", key, { workers = opts.b_workers })
    local hap = start_haproxy(a, b)
    local a_name = opts.a_workers and "^a/" or "^a$"
    local function count(t, pat)
      local n = 0
      for who, k in pairs(t.by) do if who:match(pat) then n = n + k end end
      return n
    end
    local phase, termed_at, after_exit = "warm-up", nil, nil
    local down_during_grace, statuses, seen_status = nil, {}, {}
    local last_stat = 0
    local t = traffic(hap.fp, 6, 4, function(t)
      if phase == "warm-up" then
        -- both answer, and a keep-alive client holds a connection to a
        local on_a = false
        for _, who in pairs(t.current) do on_a = on_a or who:match(a_name) ~= nil end
        if count(t, a_name) >= 20 and count(t, "^b") >= 20 and on_a then
          a:signal("TERM")
          phase, termed_at = "grace", socket.gettime()
        end
      elseif phase == "grace" then
        -- watch HAProxy's view of a (and b) until a has exited
        if socket.gettime() - last_stat > 0.02 then
          last_stat = socket.gettime()
          local st = haproxy_stat(hap)
          for _, sv in ipairs({ "a", "b" }) do
            local row = st["hotsock/" .. sv]
            if row and not a:exited() then
              local check = row.check_status:gsub("^%* ", "") -- "* ": a check under way
              local s = ("%s %s %s"):format(sv, row.status, check)
              if seen_status[sv] ~= s then statuses[#statuses + 1], seen_status[sv] = s, s end
              if sv == "a" and row.status == "DOWN" then down_during_grace = down_during_grace or check end
            end
          end
        end
        if a:exited() then phase, after_exit = "after", #t.ok end
        -- a bound, not a measure: a that has not exited long after its
        -- grace and drain_timeout ends the traffic (and the test fails)
        if not a:exited() and socket.gettime() - termed_at > 30 then return true end
      elseif phase == "after" then
        return #t.ok - after_exit >= 200
      end
      return false
    end)
    local why = ("answers %d (by instance: %s), failures %d: %s\nHAProxy saw: %s\na's log:\n%s\nHAProxy's log:\n%s")
      :format(#t.ok, (function()
        local s = {}
        for who, n in pairs(t.by) do s[#s + 1] = who .. "=" .. n end
        table.sort(s)
        return table.concat(s, " ")
      end)(), #t.fails, table.concat(t.fails, "; ", 1, math.min(#t.fails, 10)),
      table.concat(statuses, ", "), a:stderr():sub(-3000), hap.proc:stderr():sub(-2000))

    -- not one request failed
    assert.are.equal(0, #t.fails, why)
    assert.are.equal(t.requests, #t.ok, why)
    -- a stopped cleanly, on its own, after its grace
    assert.truthy(after_exit, why)
    assert.are.equal(0, a:stop(), why)
    local err = a:stderr()
    assert.truthy(err:find("SIGTERM: health checks say draining; stopping in " .. STOP_GRACE
      .. " ms (stop_grace)", 1, true), why)
    assert.truthy(err:find("stop_grace over: stopping", 1, true), why)
    for w = 1, opts.a_workers or 0 do -- under --workers, each worker does it
      assert.truthy(err:find(("worker %d: stop_grace over: stopping"):format(w), 1, true), why)
    end
    assert.truthy(err:find(" info stopped\n$"), why)
    assert.is_nil(err:find("passed; dropping", 1, true), why)
    -- HAProxy took a out because its checks said 503, before a exited
    assert.are.equal("L7STS", down_during_grace, why)
    -- the keep-alive client on a was told to go elsewhere
    assert.truthy(t.closes >= 1, why)
    -- b served on alone
    assert.truthy(count(t, "^b") > 0 and #t.ok - after_exit >= 200, why)
    -- every answer counted once in Redis: 1..N, and the counter is N
    local ok, msg = check_sequence(t.ok)
    assert(ok, msg)
    assert.are.equal(tostring(#t.ok), cli(rport, "GET", key))
    assert.are.equal(0, b:stop())
    return t
  end

  it("SIGTERM to one instance under steady traffic: no request fails, none is counted twice", function()
    rolling_stop({})
  end)

  it("the same with b running --workers 2", function()
    local t = rolling_stop({ b_workers = 2 })
    assert.truthy(t.by["b/1"] and t.by["b/2"], "both of b's workers answered")
  end)

  it("the same with a, the instance stopped, running --workers 2", function()
    local t = rolling_stop({ a_workers = 2 })
    assert.truthy((t.by["a/1"] or 0) + (t.by["a/2"] or 0) > 0)
  end)
end)
