-- spec/tls_spec.lua: TLS listeners (the first slice of issue 12), driven
-- by real clients: openssl s_client, curl, and raw sockets sending garbage
-- or nothing. Certificates are made at test time with the openssl command
-- in a temp dir; no key is committed.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local q = H.quote

local sh = H.sh

-- A CA, and a server certificate it signed for localhost and 127.0.0.1
-- (with subjectAltName, as curl wants); a second, unrelated key for the
-- mismatch case.
local function make_certs(dir)
  local cmds = {
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      .. " -subj /CN=hotsock-test-ca -keyout ca.key -out ca.pem",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
      .. " -subj /CN=localhost -keyout key.pem -out req.csr",
    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
    "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile ext.cnf -out cert.pem",
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key",
  }
  for _, c in ipairs(cmds) do
    local out, rc = sh("cd " .. q(dir) .. " && " .. c)
    assert(rc == 0, c .. "\n" .. out)
  end
end

local ECHO = [[
return {
  framing = "line",
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]

describe("TLS listeners", function()
  local dir, cert, key, ca

  setup(function()
    dir = (sh("mktemp -d /tmp/hotsock-tls.XXXXXX"):gsub("%s+$", ""))
    make_certs(dir)
    cert, key, ca = dir .. "/cert.pem", dir .. "/key.pem", dir .. "/ca.pem"
  end)

  teardown(function()
    if dir and dir:match("^/tmp/hotsock%-tls%.") then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(H.cleanup)

  local function tls_args() return { "--tls-cert", cert, "--tls-key", key } end

  -- Send `input` through openssl s_client (close_notify at the end of
  -- stdin, after a pause for the answers) and return what it printed.
  local function s_client(port, input, extra)
    local cmd = ("(printf %%s %s; sleep 0.5) | timeout 10 openssl s_client -connect 127.0.0.1:%d"
      .. " -quiet -no_ign_eof %s 2>/dev/null"):format(q(input), port, extra or "")
    local f = assert(io.popen(cmd, "r"))
    local out = f:read("a")
    f:close()
    return out
  end

  local function stats_line(srv, pattern)
    srv:signal("USR2")
    return srv:wait_log(pattern, 5)
  end

  it("echoes lines to openssl s_client on a tls:// listener", function()
    local srv = H.start("examples/echo.lua", { listen = "tls://127.0.0.1:0", args = tls_args() })
    assert.truthy(srv:stderr():match("listening on 127%.0%.0%.1:%d+ %(tls%)"))
    assert.are.equal("hello\nworld\n", s_client(srv.port, "hello\nworld\n"))
    assert.are.equal("with sni\n", s_client(srv.port, "with sni\n", "-servername localhost"))
    assert.truthy(stats_line(srv, "tls_handshakes=2 tls_handshake_failures=0"))
    assert.are.equal(0, srv:stop())
  end)

  it("serves examples/http.lua over HTTPS to curl --cacert", function()
    local srv = H.start("examples/http.lua", { listen = "tls://127.0.0.1:0", args = tls_args() })
    for _, host in ipairs({ "localhost", "127.0.0.1" }) do
      local out, rc = sh(("curl -sS --max-time 5 --cacert %s https://%s:%d/")
        :format(q(ca), host, srv.port))
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("hello from hotsock", 1, true), out)
    end
    assert.are.equal(0, srv:stop())
  end)

  it("serves a plain port and a TLS port at once (module listener tables)", function()
    local script = ([[
return {
  listen = { {addr = "127.0.0.1:0", tls = {cert = %q, key = %q}}, "127.0.0.1:0" },
  framing = "line",
  on_message = function(conn, line) conn:send(line, conn.tls and " tls" or " plain", "\n") end,
}
]]):format(cert, key)
    local srv = H.start(script, { listen = false, expect_listeners = 2 })
    local tls_addr, plain_addr
    for a, rest in srv:stderr():gmatch("listening on (%S+)([^\n]*)") do
      if rest == " (tls)" then tls_addr = a else plain_addr = a end
    end
    assert.truthy(tls_addr and plain_addr)
    local c = srv:connect(plain_addr)
    H.send(c, "one\n")
    assert.are.equal("one plain", H.line(c))
    local tport = tonumber(tls_addr:match(":(%d+)$"))
    assert.are.equal("two tls\n", s_client(tport, "two\n"))
    H.send(c, "three\n")
    assert.are.equal("three plain", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("closes only the client that sends garbage instead of a ClientHello, and counts it", function()
    local srv = H.start(ECHO, { listen = "tls://127.0.0.1:0", args = tls_args() })
    local bad = srv:connect()
    H.send(bad, "GET / HTTP/1.0\r\n\r\n")
    local err, rest = H.read_to_close(bad, 3)
    assert.truthy(err == "closed" or err == "connection reset by peer", err)
    assert.are.equal("", rest)
    assert.truthy(srv:wait_log("TLS handshake from 127.0.0.1:%d+ failed", 3))
    -- a second garbage client, left open, while a good client is served
    local bad2 = srv:connect()
    H.send(bad2, string.rep("\0\1\2\3", 64))
    assert.are.equal("still served\n", s_client(srv.port, "still served\n"))
    assert.truthy(stats_line(srv, "tls_handshakes=1 tls_handshake_failures=2"))
    assert.are.equal(0, srv:stop())
  end)

  it("cuts a client that never sends a ClientHello at the handshake time-out", function()
    local args = tls_args()
    args[#args + 1] = "--timeout"
    args[#args + 1] = "first_byte=300"
    local srv = H.start(ECHO, { listen = "tls://127.0.0.1:0", args = args })
    local c = srv:connect()
    local t0 = H.now()
    local err = H.read_to_close(c, 5)
    assert.truthy(err == "closed" or err == "connection reset by peer", err)
    local took = H.now() - t0
    assert.truthy(took > 0.2 and took < 3, "closed after " .. took .. " s")
    assert.truthy(srv:wait_log("TLS handshake from 127.0.0.1:%d+ timed out", 3))
    assert.truthy(stats_line(srv, "timeouts=1 .*tls_handshake_failures=1"))
    assert.are.equal(0, srv:stop())
  end)

  it("shows conn.tls to the script (nil on plain connections)", function()
    local script = [[
return {
  framing = "line",
  on_connect = function(conn)
    local t = conn.tls
    if not t then return conn:send("plain\n") end
    conn:send(("%s|%s|%s|%s|%s\n"):format(t.version, t.cipher, tostring(t.sni),
      tostring(t.alpn), tostring(t.resumed)))
  end,
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]
    local srv = H.start(script, { listen = { "tls://127.0.0.1:0", "127.0.0.1:0" },
      args = tls_args() })
    local out = s_client(srv.port, "x\n", "-servername example.test -tls1_3")
    local v, cipher, sni, alpn, resumed = out:match("^([^|]+)|([^|]+)|([^|]+)|([^|]+)|([^|\n]+)\nx\n$")
    assert.are.equal("TLSv1.3", v, out)
    assert.truthy(cipher:match("^TLS_"), cipher)
    assert.are.equal("example.test", sni)
    assert.are.equal("nil", alpn)
    assert.are.equal("false", resumed)
    out = s_client(srv.port, "y\n", "-tls1_2")
    assert.truthy(out:match("^TLSv1%.2|[^|]+|nil|nil|false\ny\n$"), out)
    local plain
    for a in srv:stderr():gmatch("listening on (%S+)\n") do plain = a end
    local c = srv:connect(plain)
    assert.are.equal("plain", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("serves a coroutine-style script (handle) over TLS", function()
    local script = [[
return {
  handle = function(conn)
    conn:send("hi ", conn.tls.version, "\n")
    while true do
      local line = conn:receive("*l")
      if not line then return end
      conn:send(#line, "\n")
    end
  end,
}
]]
    local srv = H.start(script, { listen = "tls://127.0.0.1:0", args = tls_args() })
    local big = string.rep("x", 50000) -- several TLS records, under max_frame
    local out = s_client(srv.port, "abc\n" .. big .. "\n", "-tls1_3")
    assert.are.equal("hi TLSv1.3\n3\n50000\n", out)
    assert.are.equal(0, srv:stop())
  end)

  it("refuses a module whose TLS key is missing or does not match, with a clear message", function()
    local function module(k)
      return H.write_script(([[
return {
  listen = { {addr = "127.0.0.1:0", tls = {cert = %q, key = %q}} },
  on_message = function() end,
}
]]):format(cert, k))
    end
    local missing = dir .. "/no-such-key.pem"
    local rc, _, err = H.run({ "--check", module(missing) })
    assert.are.equal(2, rc)
    assert.truthy(err:find("TLS key " .. missing .. ": No such file or directory", 1, true), err)
    rc, _, err = H.run({ module(missing) })
    assert.are.equal(2, rc)
    assert.truthy(err:find("no-such-key.pem", 1, true), err)
    rc, _, err = H.run({ "--check", module(dir .. "/other.key") })
    assert.are.equal(2, rc)
    assert.truthy(err:find("does not match certificate", 1, true), err)
    rc, _, err = H.run({ "--check", module(key) })
    assert.are.equal(0, rc, err)
  end)

  it("wants --tls-cert and --tls-key for a tls:// listener on the command line", function()
    local rc, _, err = H.run({ "-l", "tls://127.0.0.1:0", H.write_script(ECHO) })
    assert.are.equal(2, rc)
    assert.truthy(err:find("needs --tls-cert FILE and --tls-key FILE", 1, true), err)
  end)
end)
