-- spec/admin_spec.lua: the admin endpoint (--admin ADDR; docs/operations.md,
-- "The admin endpoint"): /metrics checked by promtool, /health, /stats and
-- /connections as JSON, the console (clients, show, kill, trace, log,
-- reload, stats, eval), `hotsock console`, the status page in a headless
-- Chromium, and that the endpoint stands apart from the script: not
-- counted, not under max_clients, alive while the script is broken, and a
-- console that stops reading is cut off. Loopback and unix sockets only;
-- every process is stopped by its PID.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local json = require "json"
local socket = require "socket"

local ECHO = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_connect = function(conn) conn.user = "alice"; conn.count = 0 end,
  on_message = function(conn, line)
    conn.count = conn.count + 1
    conn:send("echo: ", line, "\n")
  end,
  on_close = function(conn, why) hs.log.info("on_close " .. conn.id .. " " .. tostring(why)) end,
}
]]

local CORO = [[
return {
  handle = function(conn)
    conn.stage = "greeted"
    conn:send("hi\n")
    while true do
      local line = conn:receive("*l")
      if not line then return end
      conn.stage = "echoing"
      conn:send(line, "\n")
    end
  end,
}
]]

-- Start a server with its admin endpoint on a fresh unix socket.
local function start_admin(script, args, opts)
  local sock = H.tempdir() .. "/admin.sock"
  opts = opts or {}
  opts.args = { "--admin", "unix:" .. sock }
  for _, a in ipairs(args or {}) do opts.args[#opts.args + 1] = a end
  local srv = H.start(script, opts)
  srv:expect_log("admin endpoint on unix:" .. sock, 3, true)
  return srv, sock
end

-- One HTTP request with curl: status, headers (lower-case names), body.
local function http(sock, path, extra)
  local target = sock:match("^%d") and ("http://" .. sock .. path)
    or ("--unix-socket " .. H.quote(sock) .. " http://admin" .. path)
  local out = H.sh(("curl -s -i --max-time 5 %s %s"):format(extra or "", target))
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no HTTP answer from curl: " .. out)
  local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:]+): ([^\r]*)") do headers[k:lower()] = v end
  return status, headers, body
end

-- A console client on the unix socket; ask sends a command and returns
-- its answer (the lines up to the empty line that ends it).
local function console(sock)
  local c = assert(H.connect_addr("unix:" .. sock))
  return c
end

local function ask(c, cmd)
  H.send(c, cmd .. "\n")
  local lines = {}
  while true do
    local l, err = c:receive("*l")
    assert(l, "console closed: " .. tostring(err) .. " after " .. table.concat(lines, "\n"))
    if l == "" then return table.concat(lines, "\n") end
    lines[#lines + 1] = l
  end
end

local function client(srv, text)
  local c = srv:connect()
  if text then
    H.send(c, text .. "\n")
    assert.are.equal("echo: " .. text, H.line(c))
  end
  return c
end

-- H.run with stdout and stderr together.
local function runx(args)
  local rc, out, err = H.run(args)
  return rc, out .. err
end

local function local_addr(c)
  local ip, port = c:getsockname()
  return ip .. ":" .. port
end

-- The value of one sample in a Prometheus text: name and a label filter.
local function sample(text, name, labels)
  for line in text:gmatch("[^\n]+") do
    local n, l, v = line:match("^([%w_:]+){?([^}]*)}? (%S+)$")
    if n == name and (not labels or l:find(labels, 1, true)) then return tonumber(v) end
  end
  return nil
end

local function client_id(c_console, peer)
  local out = ask(c_console, "clients")
  for line in out:gmatch("[^\n]+") do
    if line:find("peer=" .. peer .. " ", 1, true) then return tonumber(line:match("^id=(%d+)")) end
  end
  error("no client " .. peer .. " in:\n" .. out)
end

describe("admin endpoint", function()
  after_each(function() H.cleanup() end)

  it("serves /metrics that promtool accepts, with the script's traffic and none of its own", function()
    local srv, sock = start_admin(ECHO)
    local a = client(srv, "one")
    local b = client(srv, "two")
    H.send(b, "three\n")
    assert.are.equal("echo: three", H.line(b))
    a:close()
    -- The close is counted once on_close ran (before the loop sleeps).
    srv:expect_log("on_close %d+ eof", 3)
    local status, headers, body
    for _ = 1, 3 do -- scraping is not traffic: the figures stay put
      status, headers, body = http(sock, "/metrics")
      assert.are.equal(200, status)
    end
    assert.truthy(headers["content-type"]:find("text/plain; version=0.0.4", 1, true))
    assert.are.equal(2, sample(body, "hotsock_accepted_total"))
    assert.are.equal(1, sample(body, "hotsock_active"))
    assert.are.equal(1, sample(body, "hotsock_closed_total"))
    assert.are.equal(3, sample(body, "hotsock_frames_in_total"))
    assert.are.equal(#"one\ntwo\nthree\n", sample(body, "hotsock_bytes_in_total"))
    local l = srv.addrs[1]
    assert.are.equal(2, sample(body, "hotsock_listener_accepted_total", 'listener="' .. l .. '"'))
    assert.are.equal(1, sample(body, "hotsock_listener_active", 'listener="' .. l .. '"'))
    assert.are.equal(3, sample(body, "hotsock_handler_seconds_count", 'handler="on_message"'))
    assert.are.equal(3, sample(body, "hotsock_handler_seconds_bucket", 'handler="on_message",le="+Inf"'))
    assert.are.equal(2, sample(body, "hotsock_handler_seconds_count", 'handler="on_connect"'))
    assert.are.equal(1, sample(body, "hotsock_connection_duration_seconds_count"))
    assert.truthy(sample(body, "hotsock_lua_memory_bytes") > 0)
    assert.are.equal(1, sample(body, "hotsock_last_reload_success"))
    if not H.have("promtool") then
      pending("promtool (Debian package prometheus) is not installed")
      return
    end
    local f = H.tempdir() .. "/metrics.txt"
    H.write_file(f, body)
    local out, code = H.sh("promtool check metrics < " .. H.quote(f))
    assert.are.equal(0, code, out)
  end)

  it("answers /health up, then 503 draining during stop_grace", function()
    local srv, sock = start_admin(ECHO, { "--stop-grace", "3000" })
    local status, _, body = http(sock, "/health")
    assert.are.equal(200, status)
    assert.are.equal("up\n", body)
    srv:signal("TERM")
    srv:expect_log("health checks say draining", 3, true)
    status, _, body = http(sock, "/health")
    assert.are.equal(503, status)
    assert.are.equal("draining\n", body)
    srv:signal("TERM") -- a second signal stops at once
    assert.are.equal(0, srv:wait_exit(5))
  end)

  it("gives /stats and /connections as JSON naming the live connections", function()
    local srv, sock = start_admin(ECHO)
    local a = client(srv, "hello")
    local b = client(srv)
    local status, headers, body = http(sock, "/connections")
    assert.are.equal(200, status)
    assert.are.equal("application/json", headers["content-type"])
    local conns = json.decode(body)
    assert.are.equal(2, #conns)
    local by_peer = {}
    for _, c in ipairs(conns) do by_peer[c.peer] = c end
    local ca, cb = by_peer[local_addr(a)], by_peer[local_addr(b)]
    assert.truthy(ca, body)
    assert.truthy(cb, body)
    assert.are.equal(6, ca.bytes_in)
    assert.are.equal(#"echo: hello\n", ca.bytes_out)
    assert.are.equal(0, cb.bytes_in)
    assert.are.equal("line", ca.framing)
    assert.are.equal(srv.addrs[1], ca.listener)
    assert.are.equal("idle", ca.state)
    status, _, body = http(sock, "/stats")
    assert.are.equal(200, status)
    local s = json.decode(body)
    assert.are.equal(2, s.counters.accepted)
    assert.are.equal(2, s.counters.active)
    assert.are.equal(srv.pid, s.pid)
    local kinds = {}
    for _, l in ipairs(s.listeners) do kinds[l.kind] = l end
    assert.are.equal(srv.addrs[1], kinds.clients.name)
    assert.are.equal(2, kinds.clients.active)
    assert.are.equal("unix:" .. sock, kinds.admin.name)
    -- Unknown paths and other methods are refused; HEAD has no body.
    assert.are.equal(404, (http(sock, "/nope")))
    assert.are.equal(405, (http(sock, "/stats", "-X POST")))
    local hs, hh, hb = http(sock, "/stats", "-I")
    assert.are.equal(200, hs)
    assert.truthy(tonumber(hh["content-length"]) > 0)
    assert.are.equal("", hb)
  end)

  it("lists clients and shows a connection's fields and where its coroutine waits", function()
    local srv, sock = start_admin(CORO, { "--timeout", "read=60000" })
    local c = srv:connect()
    assert.are.equal("hi", H.line(c))
    H.send(c, "x\n")
    assert.are.equal("x", H.line(c))
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    local line = ask(k, "clients")
    assert.truthy(line:find("listener=" .. srv.addrs[1], 1, true), line)
    assert.truthy(line:find("in=2 out=5 ", 1, true), line)
    assert.truthy(line:find("state=waiting in receive (line, timeout 60000 ms", 1, true), line)
    local shown = ask(k, "show " .. id)
    assert.truthy(shown:find("\nfield stage = \"echoing\"\n", 1, true), shown)
    assert.truthy(shown:find("coroutine stack:", 1, true), shown)
    assert.truthy(shown:find("in method 'receive'", 1, true), shown)
    assert.truthy(shown:find("script.lua:6:", 1, true), shown)
    assert.truthy(ask(k, "show 999"):find("^error: no connection"))
    assert.truthy(ask(k, "frobnicate"):find("^error: unknown command"))
    assert.truthy(ask(k, "help"):find("trace ID", 1, true))
  end)

  it("kills a connection: the client is cut off and on_close runs", function()
    local srv, sock = start_admin(ECHO)
    local c = client(srv, "hi")
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    assert.are.equal("killed " .. id, ask(k, "kill " .. id))
    local err = H.read_to_close(c)
    assert.truthy(err == "closed" or err:find("reset"), err)
    srv:expect_log("on_close " .. id .. " killed from the admin console", 3, true)
    assert.are.equal("", ask(k, "clients"))
  end)

  it("traces every byte in and out of one connection, then tells of its close", function()
    local srv, sock = start_admin(ECHO)
    local c = client(srv)
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    assert.truthy(ask(k, "trace " .. id):find("^tracing " .. id))
    H.send(c, "hello\n")
    assert.are.equal("echo: hello", H.line(c))
    local got = {}
    for _ = 1, 4 do got[#got + 1] = assert(H.line(k)) end
    local text = table.concat(got, "\n")
    assert.truthy(text:find("conn " .. id .. " in 6 bytes", 1, true), text)
    assert.truthy(text:find("68 65 6c 6c 6f 0a", 1, true), text)
    assert.truthy(text:find("|hello.|", 1, true), text)
    assert.truthy(text:find("conn " .. id .. " out 6 bytes", 1, true), text) -- "echo: "
    c:close()
    local rest = {}
    H.wait_until(function()
      local l = k:receive("*l")
      rest[#rest + 1] = l
      return l and l:find("closed", 1, true)
    end, 3)
    assert.truthy(table.concat(rest, "\n"):find("trace conn " .. id .. " closed: ", 1, true),
      table.concat(rest, "\n"))
  end)

  it("untrace stops the dump", function()
    local srv, sock = start_admin(ECHO)
    local c = client(srv)
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    ask(k, "trace " .. id)
    assert.are.equal("stopped tracing 1 connection", ask(k, "untrace"))
    H.send(c, "quiet\n")
    assert.are.equal("echo: quiet", H.line(c))
    assert.truthy(H.quiet(k, 0.3))
  end)

  it("sets the log level at run time", function()
    local srv, sock = start_admin(ECHO)
    local k = console(sock)
    assert.are.equal("log level info", ask(k, "log"))
    client(srv, "a")
    assert.is_nil(srv:wait_log("connected from", 0.3, true))
    assert.are.equal("log level debug", ask(k, "log debug"))
    client(srv, "b")
    srv:expect_log("debug conn %d+: connected from", 3)
    assert.truthy(ask(k, "log loud"):find("^error: the level is"))
  end)

  it("reloads from the console and says how it went; a broken script leaves it serving", function()
    local srv, sock = start_admin(ECHO, { "--no-watch" })
    local k = console(sock)
    assert.truthy(ask(k, "reload"):find("^reload ok: generation 1 %("))
    H.write_file(srv.script, "return {  -- broken\n")
    local answer = ask(k, "reload")
    assert.truthy(answer:find("^reload failed: "), answer)
    client(srv, "still")
    local s = json.decode((select(3, http(sock, "/stats"))))
    assert.are.equal(1, s.counters.reload_ok)
    assert.are.equal(1, s.counters.reload_failed)
    assert.are.equal(false, s.reloads[1].ok) -- newest first
    assert.are.equal("admin console", s.reloads[1].trigger)
    assert.are.equal(true, s.reloads[2].ok)
    assert.truthy(#s.errors >= 1)
  end)

  it("evaluates Lua in the script's state only on a unix socket and only when allowed", function()
    local srv, sock = start_admin(ECHO, { "--admin-eval" })
    local c = client(srv, "x")
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    assert.are.equal("3", ask(k, "eval 1 + 2"))
    assert.are.equal("alice\t1", ask(k, ("eval conn(%d).user, conn(%d).count"):format(id, id)))
    assert.are.equal("1", ask(k, "eval hs.stats().active"))
    assert.truthy(ask(k, "eval error('boom')"):find("^error: eval:1: boom"))
    assert.truthy(ask(k, "eval while true do end"):find("^error: it exceeded the handler budget"))
    assert.are.equal("echo: y", (function() H.send(c, "y\n") return H.line(c) end)())
    srv:stop()
    -- Without --admin-eval: refused.
    local srv2, sock2 = start_admin(ECHO)
    assert.truthy(ask(console(sock2), "eval 1"):find("^error: eval is off"))
    srv2:stop()
    -- On a TCP endpoint: refused even when allowed.
    local srv3 = H.start(ECHO, { args = { "--admin", "127.0.0.1:0", "--admin-eval" } })
    local addr = srv3:expect_log("admin endpoint on (%S+)")
    srv3:expect_log("admin eval is allowed on a unix socket only", 3, true)
    local t = assert(H.connect_addr(addr))
    assert.truthy(ask(t, "eval 1"):find("unix socket only", 1, true))
  end)

  it("stands apart from the script: not under max_clients, alive while the script is broken", function()
    local srv, sock = start_admin(ECHO, { "--max-clients", "1", "--no-watch" })
    local c = client(srv, "in")
    local d = srv:connect()
    local err = H.read_to_close(d)
    assert.truthy(err == "closed" or err:find("reset"), err)
    local k = console(sock)
    local k2 = console(sock)
    assert.truthy(ask(k, "clients"):find("id=", 1, true))
    assert.truthy(ask(k2, "stats"):find("\nrejected 1\n", 1, true))
    assert.truthy(ask(k2, "stats"):find("\nactive 1\n", 1, true))
    H.write_file(srv.script, "error('broken on purpose')\n")
    srv:signal("HUP")
    srv:expect_log("reload %(SIGHUP%) failed", 3)
    assert.truthy(ask(k, "stats"):find("reload_failed 1", 1, true))
    assert.are.equal(200, (http(sock, "/metrics")))
    H.send(c, "still\n")
    assert.are.equal("echo: still", H.line(c))
  end)

  it("cuts off a console that stops reading its trace, and keeps serving", function()
    local srv, sock = start_admin(ECHO, { "--max-outbuf", "65536", "--max-frame", "1048576",
      "--max-inbuf", "2097152" })
    local c = client(srv)
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    ask(k, "trace " .. id)
    -- The console reads nothing from here on; the client streams lines.
    local chunk = ("z"):rep(1023) .. "\n"
    for _ = 1, 200 do
      H.send(c, chunk)
      assert.are.equal(("echo: "):rep(1) .. ("z"):rep(1023), H.line(c))
    end
    srv:expect_log("admin console fell behind its trace of conn " .. id, 3, true)
    H.send(c, "after\n")
    assert.are.equal("echo: after", H.line(c))
    local s = json.decode((select(3, http(sock, "/connections"))))
    assert.are.equal(1, #s)
    assert.are.equal(false, s[1].traced)
  end)

  it("accepts only a unix socket or a loopback address, at start and in --check", function()
    local script = H.write_script(ECHO)
    local rc, out = runx({ "--admin", "0.0.0.0:9999", script })
    assert.are.equal(2, rc)
    assert.truthy(out:find("unix socket or a loopback address", 1, true), out)
    rc, out = runx({ "--check", "--admin", "10.1.2.3:80", script })
    assert.are.equal(2, rc)
    assert.truthy(out:find("loopback", 1, true), out)
    rc, out = runx({ "--check", "--admin", "127.0.0.1:99999", script })
    assert.are.equal(2, rc)
    assert.truthy(out:find("bad port", 1, true), out)
    rc = H.run({ "--check", "--admin", "[::1]:9000", script })
    assert.are.equal(0, rc)
  end)

  it("takes the admin address from the module, with eval", function()
    local sock = H.tempdir() .. "/m.sock"
    local src = ECHO:gsub("framing = \"line\",", ("framing = \"line\", admin = { addr = %q, eval = true },")
      :format("unix:" .. sock))
    local srv = H.start(src)
    srv:expect_log("admin endpoint on unix:" .. sock .. " (eval allowed)", 3, true)
    assert.are.equal("ok", ask(console(sock), "eval 'ok'"))
    srv:stop()
    local rc, out = runx({ "--check", H.write_script(ECHO:gsub("framing = \"line\",",
      "framing = \"line\", admn = \"unix:/tmp/x\",")) })
    assert.are.equal(2, rc)
    assert.truthy(out:find("did you mean admin?", 1, true), out)
    rc, out = runx({ "--check", H.write_script(ECHO:gsub("framing = \"line\",",
      "framing = \"line\", admin = 42,")) })
    assert.are.equal(2, rc)
    assert.truthy(out:find("admin must be an address", 1, true), out)
  end)

  it("hotsock console runs one command and prints its answer", function()
    local srv, sock = start_admin(ECHO)
    local c = client(srv, "hey")
    local out, code = H.sh(H.quote(H.bin) .. " console " .. H.quote(sock) .. " clients")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("peer=" .. local_addr(c) .. " ", 1, true), out)
    out, code = H.sh("printf 'stats\\nlog\\n' | " .. H.quote(H.bin) .. " console unix:" .. H.quote(sock))
    assert.are.equal(0, code, out)
    assert.truthy(out:find("accepted 1\n", 1, true), out)
    assert.truthy(out:find("log level info", 1, true), out)
    out, code = H.sh(H.quote(H.bin) .. " console " .. H.quote(sock .. ".missing") .. " stats")
    assert.are.equal(1, code)
    assert.truthy(out:find("cannot connect", 1, true), out)
  end)

  it("gives each worker an endpoint of its own", function()
    local srv, sock = start_admin(ECHO, { "--workers", "2" }, { expect_listeners = 1 })
    for w = 1, 2 do
      local p = sock .. "." .. w
      assert.truthy(H.wait_until(function() return os.execute("test -S " .. H.quote(p)) == true end, 5), p)
      local status, _, body = http(p, "/metrics")
      assert.are.equal(200, status)
      assert.truthy(body:find('hotsock_active{worker="' .. w .. '"}', 1, true), body:sub(1, 400))
    end
    srv:stop()
  end)

  it("shows the live connections on the status page in a headless browser", function()
    local chromium = H.have("chromium") and "chromium" or H.have("chromium-browser") and "chromium-browser"
    if not chromium then
      pending("chromium (Debian package chromium) is not installed")
      return
    end
    local srv = H.start(ECHO, { args = { "--admin", "127.0.0.1:0" } })
    local addr = srv:expect_log("admin endpoint on (%S+)")
    local a = client(srv, "one")
    local b = client(srv, "two")
    local profile = H.tempdir()
    local out, code = H.sh(("timeout 60 %s --headless --no-sandbox --disable-gpu --no-first-run "
      .. "--user-data-dir=%s --virtual-time-budget=5000 --dump-dom http://%s/ 2>/dev/null")
      :format(chromium, H.quote(profile), addr))
    assert.are.equal(0, code, out)
    local tbody = out:match('<table id="connections">.-<tbody>(.-)</tbody>')
    assert.truthy(tbody, out:sub(1, 2000))
    assert.truthy(tbody:find("<td>" .. local_addr(a) .. "</td>", 1, true), tbody)
    assert.truthy(tbody:find("<td>" .. local_addr(b) .. "</td>", 1, true), tbody)
    assert.truthy(out:find('<span id="nconns">2</span>', 1, true), out:sub(1, 2000))
    local listeners = out:match('<table id="listeners">.-<tbody>(.-)</tbody>')
    assert.truthy(listeners:find("<td>" .. srv.addrs[1] .. "</td>", 1, true), listeners)
  end)
  it("survives a trace that overflows in the middle of a send of several strings", function()
    local srv, sock = start_admin(ECHO, { "--max-outbuf", "8192" })
    local c = client(srv)
    local k = console(sock)
    local id = client_id(k, local_addr(c))
    ask(k, "trace " .. id)
    local line = ("q"):rep(1000)
    H.send(c, line .. "\n") -- the reply is three strings: "echo: ", line, "\n"
    assert.are.equal("echo: " .. line, H.line(c))
    srv:expect_log("admin console fell behind its trace of conn " .. id, 3, true)
    H.send(c, "again\n")
    assert.are.equal("echo: again", H.line(c))
  end)

  it("keeps eval's answer in one piece and survives a script's metamethods", function()
    -- A script that never requires hotsock, with an autoloader that raises
    -- for a module it does not know: eval looks "hotsock" up without it.
    local src = [[
setmetatable(package.loaded, { __index = function(_, k) error("no module " .. k) end })
return {
  framing = "line",
  on_message = function(conn, line) conn:send("echo: ", line, "\n") end,
}
]]
    local srv, sock = start_admin(src, { "--admin-eval" })
    local k = console(sock)
    assert.are.equal("a\n\\x0ab", ask(k, "eval 'a\\n\\nb'"))
    assert.are.equal("2", ask(k, "eval 1 + 1"))
    assert.are.equal("true", ask(k, "eval hs == nil"))
    client(srv, "still")
    srv:expect_log("warn admin console: eval 1 + 1", 3, true)
  end)

  it("refuses admin connections past its limit and keeps serving the ones it has", function()
    local srv, sock = start_admin(ECHO)
    local open = {}
    for i = 1, 16 do open[i] = console(sock) end
    for i = 1, 16 do assert.truthy(ask(open[i], "stats"):find("accepted 0", 1, true)) end
    local extra = console(sock)
    local err = H.read_to_close(extra)
    assert.truthy(err == "closed" or err:find("reset"), err)
    srv:expect_log("admin endpoint: 16 connections open already; refusing more", 3, true)
    open[1]:close()
    assert.truthy(H.wait_until(function()
      local c = console(sock)
      H.send(c, "log\n")
      local l = c:receive("*l")
      c:close()
      return l == "log level info"
    end, 3))
    client(srv, "fine")
  end)

  it("counts a connection's age from its accept, whatever its timeouts did", function()
    local src = [[
return {
  framing = "line",
  timeouts = { first_byte = 200 },
  on_timeout = function() end, -- handled: the connection stays
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]
    local srv, sock = start_admin(src)
    local c = srv:connect()
    H.sleep(1.0)
    local k = console(sock)
    local line = ask(k, "clients")
    local age = tonumber(line:match("age=([%d.]+)s"))
    assert.truthy(age and age >= 0.9, line)
    c:close()
  end)

  it("refuses HTTP requests whose Host is not a loopback name (DNS rebinding)", function()
    local srv = H.start(ECHO, { args = { "--admin", "127.0.0.1:0" } })
    local addr = srv:expect_log("admin endpoint on (%S+)")
    local status, _, body = http(addr, "/stats", "-H 'Host: evil.example'")
    assert.are.equal(403, status)
    assert.truthy(body:find("loopback", 1, true))
    assert.are.equal(200, (http(addr, "/stats", "-H 'Host: localhost:80'")))
    assert.are.equal(200, (http(addr, "/stats")))
  end)
end)
