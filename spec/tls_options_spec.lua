-- spec/tls_options_spec.lua: the TLS settings a user of TLS listeners
-- reaches for (SNI certificates, ALPN, min_version, cipher lists, client
-- certificates, session resumption and tickets, reloading certificate
-- files, --check, unknown settings, unix sockets), driven by real clients:
-- openssl s_client, curl, redis-cli, wrk, and LuaSec for a connection kept
-- open across a reload. Certificates are made at test time with the openssl
-- command in a temp dir; no key is committed.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local q = H.quote

-- Run a shell command; its output (stdout and stderr) and exit code.
local sh = H.sh

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

---------------------------------------------------------------------------
-- certificates
---------------------------------------------------------------------------

local EC = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

-- Run each command in dir; fail with its output when one fails.
local function run_in(dir, cmds)
  for _, c in ipairs(cmds) do
    local out, rc = sh("cd " .. q(dir) .. " && " .. c)
    assert(rc == 0, c .. "\n" .. out)
  end
end

-- A self-signed CA: NAME.pem, NAME.key.
local function make_ca(dir, name, subj)
  run_in(dir, {
    ("openssl req -x509 %s -days 2 -subj %s -keyout %s.key -out %s.pem"):format(EC, q(subj), name, name),
  })
end

-- A certificate NAME.pem (key NAME.key) for subj, signed by the CA named
-- ca, with the extensions in ext (one per line) and an optional serial.
local function make_cert(dir, name, subj, ext, ca, serial)
  run_in(dir, {
    ("openssl req %s -subj %s -keyout %s.key -out %s.csr"):format(EC, q(subj), name, name),
    ("printf %%s %s > %s.ext"):format(q(ext), name),
    ("openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key %s -days 2 -extfile %s.ext -out %s.pem")
      :format(name, ca, ca, serial and ("-set_serial " .. serial) or "-CAcreateserial", name, name),
  })
end

local SERVER_EXT = "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
local CLIENT_SERIAL = "0x0A1B2C3D4E5F"

local function make_certs(dir)
  make_ca(dir, "ca", "/O=hotsock/CN=hotsock-test-ca")
  make_ca(dir, "ca2", "/CN=hotsock-other-ca")
  -- the default server certificate, and a second one chosen by SNI
  make_cert(dir, "server", "/CN=localhost", SERVER_EXT, "ca")
  make_cert(dir, "sni", "/CN=sni-other", "subjectAltName=DNS:other.test,DNS:*.wild.test\n", "ca")
  -- the pair a reload puts in place of server.pem/server.key
  make_cert(dir, "renewed", "/CN=renewed", SERVER_EXT, "ca")
  -- client certificates: one signed by the CA the server trusts, one not
  make_cert(dir, "client", "/O=hotsock-test/CN=client", "extendedKeyUsage=clientAuth\n", "ca",
    CLIENT_SERIAL)
  make_cert(dir, "rogue", "/CN=rogue", "extendedKeyUsage=clientAuth\n", "ca2")
  -- a key that belongs to no certificate
  run_in(dir, { "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key" })
end

---------------------------------------------------------------------------
-- the script most tests run
---------------------------------------------------------------------------

-- On a TLS connection it greets with what conn.tls says, "|"-separated:
--   HELLO version|cipher|sni|alpn|resumed|subject|issuer|serial|fingerprint
-- then echoes lines ("ECHO x"); QUIT closes (after the queued output, with
-- close_notify), STATS answers with hs.stats()'s TLS and reload counters,
-- SETTINGS with hs.tls_settings(). A plain listener is there for STATS.
local BODY = [[
local hs = require "hotsock"
local FIELDS = { "version", "cipher", "sni", "alpn", "resumed", "subject", "issuer", "serial",
  "fingerprint" }
local function info(conn)
  local out = {}
  for i, k in ipairs(FIELDS) do out[i] = tostring(conn.tls[k]) end
  return table.concat(out, "|")
end
return {
  listen = %s,
  %s
  framing = "line",
  on_connect = function(conn)
    if conn.tls then conn:send("HELLO ", info(conn), "\n") end
  end,
  on_message = function(conn, line)
    if line == "QUIT" then return conn:close() end
    if line == "STATS" then
      local s = hs.stats()
      return conn:send(("STATS tls_handshakes=%%d tls_handshake_failures=%%d tls_resumed=%%d reload_failed=%%d\n")
        :format(s.tls_handshakes, s.tls_handshake_failures, s.tls_resumed, s.reload_failed))
    end
    if line == "SETTINGS" then
      local t = hs.tls_settings()
      return conn:send("SETTINGS ", t and (t.cert .. " " .. t.key) or "nil", "\n")
    end
    conn:send("ECHO ", line, "\n")
  end,
}
]]

local function script(listen, tls)
  return BODY:format(listen, tls and ("tls = " .. tls .. ",") or "")
end

-- The conn.tls fields in a HELLO line, or nil.
local function hello(out)
  local line = out:match("HELLO ([^\n]*)")
  if not line then return nil end
  local f, i = {}, 0
  for v in (line .. "|"):gmatch("([^|]*)|") do
    i = i + 1
    f[i] = v
  end
  local t = {}
  for k, name in ipairs({ "version", "cipher", "sni", "alpn", "resumed", "subject", "issuer",
    "serial", "fingerprint" }) do
    if f[k] ~= "nil" then t[name] = f[k] end
  end
  return t
end

---------------------------------------------------------------------------

describe("TLS settings", function()
  local dir

  setup(function()
    dir = (sh("mktemp -d /tmp/hotsock-tlsopt.XXXXXX"):gsub("%s+$", ""))
    make_certs(dir)
  end)

  teardown(function()
    if dir and dir:match("^/tmp/hotsock%-tlsopt%.") then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(H.cleanup)

  local function f(name) return dir .. "/" .. name end

  -- The module's tls field with the default certificate and more settings.
  local function defaults(extra)
    return ("{cert = %q, key = %q%s}"):format(f("server.pem"), f("server.key"),
      extra and (", " .. extra) or "")
  end

  -- Start a server whose listen list is the given TLS listener sources
  -- (strings of Lua, in order) and a plain one at the end. Returns the
  -- server, the TLS listeners' ports (in order) and the plain address.
  local function start(tls_listeners, tls, opts)
    local parts = {}
    for i, l in ipairs(tls_listeners) do parts[i] = l end
    parts[#parts + 1] = '"127.0.0.1:0"'
    opts = opts or {}
    opts.listen = false
    opts.expect_listeners = #parts
    local srv = H.start(script("{ " .. table.concat(parts, ", ") .. " }", tls), opts)
    local ports, plain = {}, nil
    for a, rest in srv:stderr():gmatch("listening on (%S+)([^\n]*)") do
      if rest == " (tls)" then
        ports[#ports + 1] = tonumber(a:match(":(%d+)$")) or a
      else
        plain = a
      end
    end
    assert.are.equal(#tls_listeners, #ports, srv:stderr())
    assert.truthy(plain, srv:stderr())
    return srv, ports, plain
  end

  -- hs.stats() as the script reads it, over the plain listener.
  local function stats(srv, plain)
    local c = srv:connect(plain)
    H.send(c, "STATS\n")
    local line = assert(H.line(c))
    c:close()
    local t = {}
    for k, v in line:gmatch("(%S+)=(%d+)") do t[k] = tonumber(v) end
    return t
  end

  -- openssl s_client to a TCP port (or "unix:PATH"): sends input, which
  -- should end with QUIT so that the server closes (default "QUIT\n"), and
  -- returns everything it printed (the handshake summary, verify lines,
  -- errors, the answers). With input "" it leaves at the end of its
  -- input, right after the handshake (and the -reconnect ones).
  local function s_client(target, input, extra)
    local where = type(target) == "string" and target:match("^unix:(.*)")
    where = where and ("-unix " .. q(where)) or ("-connect 127.0.0.1:" .. target)
    input = input or "QUIT\n"
    -- stdout unbuffered: s_client writes the server's bytes with write(2)
    -- and its own report through stdio; so they do not interleave
    local cmd = ("printf %%s %s | timeout 10 stdbuf -o0 openssl s_client %s %s -nameopt RFC2253 %s")
      :format(q(input), where, input == "" and "" or "-ign_eof", extra or "")
    return (sh(cmd))
  end

  -- The subject of the certificate the server presents (RFC 2253).
  local function subject_of(out)
    local s = out:match("\nsubject=([^\n]*)")
    return s and trim(s)
  end

  local function cert_field(name, what)
    local out, rc = sh(("openssl x509 -in %s -noout %s"):format(q(f(name)), what))
    assert(rc == 0, out)
    return trim(out)
  end

  -------------------------------------------------------------------------

  it("picks the certificate for the SNI name (certs), the default otherwise", function()
    local srv, ports = start({ "{addr = '127.0.0.1:0', tls = true}" },
      defaults(("certs = { {cert = %q, key = %q} }"):format(f("sni.pem"), f("sni.key"))))
    local p = ports[1]
    local out = s_client(p, "hi\nQUIT\n", "-servername other.test")
    assert.are.equal("CN=sni-other", subject_of(out), out)
    assert.are.equal("other.test", hello(out).sni)
    assert.truthy(out:find("\nECHO hi\n", 1, true), out)
    -- a wildcard name
    out = s_client(p, nil, "-servername a.wild.test")
    assert.are.equal("CN=sni-other", subject_of(out), out)
    -- the CA verifies what SNI picked, for the name asked
    out = s_client(p, nil, ("-servername other.test -verify_hostname other.test -CAfile %s")
      :format(q(f("ca.pem"))))
    assert.truthy(out:find("Verify return code: 0 (ok)", 1, true), out)
    -- the default: its own name, a name no certificate has, no SNI at all
    for _, extra in ipairs({ "-servername localhost", "-servername unknown.test",
      "-servername a.b.wild.test", "-noservername" }) do
      out = s_client(p, nil, extra)
      assert.are.equal("CN=localhost", subject_of(out), extra .. "\n" .. out)
      assert.truthy(hello(out), out)
    end
    assert.are.equal(0, srv:stop())
  end)

  it("negotiates ALPN in the server's order and lets clients without ALPN in", function()
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" },
      defaults(('alpn = {"h2", "http/1.1"}, certs = { {cert = %q, key = %q} }')
        :format(f("sni.pem"), f("sni.key"))))
    local p = ports[1]
    -- the server's preference wins over the client's order
    local out = s_client(p, nil, "-alpn http/1.1,h2")
    assert.truthy(out:find("ALPN protocol: h2\n", 1, true), out)
    assert.are.equal("h2", hello(out).alpn)
    out = s_client(p, nil, "-alpn foo,http/1.1")
    assert.truthy(out:find("ALPN protocol: http/1.1\n", 1, true), out)
    assert.are.equal("http/1.1", hello(out).alpn)
    -- no ALPN offered: served, conn.tls.alpn is nil
    out = s_client(p, "x\nQUIT\n")
    assert.truthy(out:find("No ALPN negotiated", 1, true), out)
    assert.truthy(hello(out), out)
    assert.is_nil(hello(out).alpn)
    assert.truthy(out:find("\nECHO x\n", 1, true), out)
    -- also on a certificate chosen by SNI
    out = s_client(p, nil, "-servername other.test -alpn http/1.1")
    assert.are.equal("CN=sni-other", subject_of(out), out)
    assert.are.equal("http/1.1", hello(out).alpn, out)
    assert.are.equal(0, stats(srv, plain).tls_handshake_failures)
    assert.are.equal(0, srv:stop())
  end)

  it("refuses a client whose ALPN list has nothing in common (no_application_protocol)", function()
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" },
      defaults('alpn = {"h2", "http/1.1"}'))
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      local out = s_client(ports[1], "x\nQUIT\n", "-alpn spdy/3,foo " .. v)
      assert.is_nil(hello(out), out)
      assert.falsy(out:find("ECHO x", 1, true), out)
      assert.truthy(out:lower():find("no application protocol", 1, true), out)
    end
    local s = stats(srv, plain)
    assert.are.equal(0, s.tls_handshakes)
    assert.are.equal(2, s.tls_handshake_failures)
    assert.are.equal(0, srv:stop())
  end)

  it("tells curl http/1.1 by ALPN when examples/http.lua's module declares it", function()
    -- examples/http.lua's module, with tls = {alpn = {"http/1.1"}} added
    local wrapper = ([[
local m = dofile(%q)
m.tls = { alpn = { "http/1.1" } }
return m
]]):format(H.root .. "/examples/http.lua")
    local srv = H.start(wrapper, { listen = "tls://127.0.0.1:0",
      args = { "--tls-cert", f("server.pem"), "--tls-key", f("server.key") } })
    local out, rc = sh(("timeout 10 curl -sS -v --max-time 5 --http1.1 --cacert %s https://localhost:%d/")
      :format(q(f("ca.pem")), srv.port))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("ALPN: server accepted http/1.1", 1, true), out)
    assert.truthy(out:find("hello from hotsock", 1, true), out)
    out = s_client(srv.port, "", "-alpn h2,http/1.1")
    assert.truthy(out:find("ALPN protocol: http/1.1\n", 1, true), out)
    assert.are.equal(0, srv:stop())
  end)

  it("serves examples/http.lua itself to curl --http1.1 over TLS", function()
    local srv = H.start("examples/http.lua", { listen = "tls://127.0.0.1:0",
      args = { "--tls-cert", f("server.pem"), "--tls-key", f("server.key") } })
    local out, rc = sh(("timeout 10 curl -sS -v --max-time 5 --http1.1 --cacert %s https://localhost:%d/")
      :format(q(f("ca.pem")), srv.port))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("hello from hotsock", 1, true), out)
    -- whatever ALPN says, it is never h2 (the example speaks HTTP/1.1)
    assert.falsy(out:find("ALPN: server accepted h2", 1, true), out)
    assert.are.equal(0, srv:stop())
  end)

  it("min_version = TLSv1.3 refuses TLS 1.2 clients; the default takes them", function()
    local srv, ports, plain = start({
      "{addr = '127.0.0.1:0', tls = {min_version = 'TLSv1.3'}}",
      "{addr = '127.0.0.1:0', tls = true}",
    }, defaults())
    local out = s_client(ports[1], "x\nQUIT\n", "-tls1_2")
    assert.is_nil(hello(out), out)
    assert.falsy(out:find("ECHO x", 1, true), out)
    out = s_client(ports[1], "x\nQUIT\n", "-tls1_3")
    assert.are.equal("TLSv1.3", hello(out).version, out)
    assert.truthy(out:find("\nECHO x\n", 1, true), out)
    out = s_client(ports[2], "x\nQUIT\n", "-tls1_2")
    assert.are.equal("TLSv1.2", hello(out).version, out)
    local s = stats(srv, plain)
    assert.are.equal(2, s.tls_handshakes)
    assert.are.equal(1, s.tls_handshake_failures)
    assert.are.equal(0, srv:stop())
  end)

  it("ciphers restricts the TLS 1.2 ciphers and ciphersuites the TLS 1.3 ones", function()
    local srv, ports = start({
      "{addr = '127.0.0.1:0', tls = {ciphers = 'ECDHE-ECDSA-AES128-GCM-SHA256', "
        .. "ciphersuites = 'TLS_CHACHA20_POLY1305_SHA256'}}",
      "{addr = '127.0.0.1:0', tls = true}",
    }, defaults())
    local out = s_client(ports[1], nil, "-tls1_2")
    assert.are.equal("ECDHE-ECDSA-AES128-GCM-SHA256", hello(out).cipher, out)
    assert.truthy(out:find("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", 1, true), out)
    -- a client offering only another cipher gets no handshake
    out = s_client(ports[1], "x\nQUIT\n", "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384")
    assert.is_nil(hello(out), out)
    out = s_client(ports[1], nil, "-tls1_3")
    assert.are.equal("TLS_CHACHA20_POLY1305_SHA256", hello(out).cipher, out)
    -- the listener without the settings takes what the client offers
    out = s_client(ports[2], "x\nQUIT\n", "-tls1_2 -cipher ECDHE-ECDSA-AES256-GCM-SHA384")
    assert.are.equal("ECDHE-ECDSA-AES256-GCM-SHA384", hello(out).cipher, out)
    assert.are.equal(0, srv:stop())
  end)

  it("verify_client = required: no certificate or another CA's is refused; the script sees the good one", function()
    local srv, ports, plain = start({
      ("{addr = '127.0.0.1:0', tls = {verify_client = 'required', ca = %q}}"):format(f("ca.pem")),
    }, defaults())
    local p = ports[1]
    local failures = 0
    -- no certificate, in TLS 1.3 (the server refuses after the client's
    -- Finished) and in TLS 1.2
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      local out = s_client(p, "x\nQUIT\n", v)
      assert.is_nil(hello(out), v .. "\n" .. out)
      assert.falsy(out:find("ECHO x", 1, true), out)
      failures = failures + 1
    end
    -- a certificate the CA signed
    local good = ("-cert %s -key %s"):format(q(f("client.pem")), q(f("client.key")))
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      local out = s_client(p, "x\nQUIT\n", good .. " " .. v)
      local t = hello(out)
      assert.truthy(t, v .. "\n" .. out)
      assert.are.equal("CN=client,O=hotsock-test", t.subject)
      assert.are.equal("CN=hotsock-test-ca,O=hotsock", t.issuer)
      assert.are.equal("0A1B2C3D4E5F", t.serial)
      assert.are.equal(cert_field("client.pem", "-serial"):match("^serial=(%x+)$"), t.serial)
      local fp = cert_field("client.pem", "-fingerprint -sha256"):match("=([%x:]+)$")
      assert.are.equal(fp:gsub(":", ""):lower(), t.fingerprint)
      assert.are.equal(64, #t.fingerprint)
      assert.truthy(out:find("\nECHO x\n", 1, true), out)
    end
    -- a certificate another CA signed
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      local out = s_client(p, "x\nQUIT\n",
        ("-cert %s -key %s %s"):format(q(f("rogue.pem")), q(f("rogue.key")), v))
      assert.is_nil(hello(out), v .. "\n" .. out)
      assert.falsy(out:find("ECHO x", 1, true), out)
      failures = failures + 1
    end
    local s = stats(srv, plain)
    assert.are.equal(2, s.tls_handshakes)
    assert.are.equal(failures, s.tls_handshake_failures)
    assert.are.equal(0, srv:stop())
  end)

  it("verify_client = optional: served without a certificate, with a good one, not with a bad one", function()
    local srv, ports, plain = start({
      ("{addr = '127.0.0.1:0', tls = {verify_client = 'optional', ca = %q}}"):format(f("ca.pem")),
    }, defaults())
    local p = ports[1]
    local out = s_client(p, "x\nQUIT\n")
    local t = hello(out)
    assert.truthy(t, out)
    assert.is_nil(t.subject)
    assert.is_nil(t.issuer)
    assert.is_nil(t.serial)
    assert.is_nil(t.fingerprint)
    assert.truthy(out:find("\nECHO x\n", 1, true), out)
    out = s_client(p, "x\nQUIT\n", ("-cert %s -key %s"):format(q(f("client.pem")), q(f("client.key"))))
    t = hello(out)
    assert.truthy(t, out)
    assert.are.equal("CN=client,O=hotsock-test", t.subject)
    assert.are.equal("0A1B2C3D4E5F", t.serial)
    out = s_client(p, "x\nQUIT\n", ("-cert %s -key %s"):format(q(f("rogue.pem")), q(f("rogue.key"))))
    assert.is_nil(hello(out), out)
    assert.falsy(out:find("ECHO x", 1, true), out)
    local s = stats(srv, plain)
    assert.are.equal(2, s.tls_handshakes)
    assert.are.equal(1, s.tls_handshake_failures)
    assert.are.equal(0, srv:stop())
  end)

  it("a session resumed on a verify_client listener keeps the client certificate's fields", function()
    local srv, ports = start({
      ("{addr = '127.0.0.1:0', tls = {verify_client = 'required', ca = %q}}"):format(f("ca.pem")),
    }, defaults())
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      local sess = H.tempdir() .. "/sess.pem"
      local out = s_client(ports[1], "x\nQUIT\n", ("-cert %s -key %s -sess_out %s %s")
        :format(q(f("client.pem")), q(f("client.key")), q(sess), v))
      assert.are.equal("CN=client,O=hotsock-test", hello(out).subject, out)
      -- the same session again, without offering the certificate
      out = s_client(ports[1], "x\nQUIT\n", ("-sess_in %s %s"):format(q(sess), v))
      local t = hello(out)
      assert.truthy(t, v .. "\n" .. out)
      assert.are.equal("true", t.resumed, out)
      assert.are.equal("CN=client,O=hotsock-test", t.subject)
      assert.are.equal("0A1B2C3D4E5F", t.serial)
    end
    assert.are.equal(0, srv:stop())
  end)

  it("does not let a session from another listener skip verify_client (no certificate, another CA's)", function()
    local srv, ports, plain = start({
      "{addr = '127.0.0.1:0', tls = true}",
      ("{addr = '127.0.0.1:0', tls = {verify_client = 'required', ca = %q}}"):format(f("ca2.pem")),
      ("{addr = '127.0.0.1:0', tls = {verify_client = 'required', ca = %q}}"):format(f("ca.pem")),
    }, defaults())
    local open, other_ca, guarded = ports[1], ports[2], ports[3]
    local served = {} -- the cases that got in, for one message with all of them
    for _, v in ipairs({ "-tls1_3", "-tls1_2" }) do
      -- a session made without a client certificate
      local sess = H.tempdir() .. "/sess.pem"
      local out = s_client(open, "x\nQUIT\n", ("-sess_out %s %s"):format(q(sess), v))
      assert.truthy(hello(out), out)
      out = s_client(guarded, "secret\nQUIT\n", ("-sess_in %s %s"):format(q(sess), v))
      if hello(out) or out:find("ECHO secret", 1, true) then
        served[#served + 1] = ("%s, no client certificate: HELLO %s"):format(v, out:match("HELLO ([^\n]*)"))
      end
      -- a session made with a certificate the guarded listener's CA did not sign
      sess = H.tempdir() .. "/sess.pem"
      out = s_client(other_ca, "x\nQUIT\n", ("-cert %s -key %s -sess_out %s %s")
        :format(q(f("rogue.pem")), q(f("rogue.key")), q(sess), v))
      assert.are.equal("CN=rogue", hello(out).subject, out)
      out = s_client(guarded, "secret\nQUIT\n", ("-sess_in %s %s"):format(q(sess), v))
      if hello(out) or out:find("ECHO secret", 1, true) then
        served[#served + 1] = ("%s, another CA's certificate: HELLO %s"):format(v, out:match("HELLO ([^\n]*)"))
      end
    end
    assert.are.same({}, served)
    assert.are.equal(0, stats(srv, plain).tls_resumed)
    assert.are.equal(0, srv:stop())
  end)

  it("resumes TLS 1.2 sessions for s_client -reconnect and counts tls_resumed", function()
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" }, defaults())
    local out = s_client(ports[1], "", "-tls1_2 -reconnect")
    local _, reused = out:gsub("\nReused, TLSv1%.2", "")
    local _, new = out:gsub("\nNew, TLSv1%.2", "")
    assert.are.equal(5, reused, out)
    assert.are.equal(1, new, out)
    -- the server sent a ticket
    assert.truthy(out:find("TLS session ticket:", 1, true), out)
    local s = stats(srv, plain)
    assert.are.equal(6, s.tls_handshakes)
    assert.are.equal(5, s.tls_resumed)
    assert.are.equal(0, srv:stop())
  end)

  it("with --workers 2, a session made on one worker resumes on the other (shared ticket keys)", function()
    local srv, ports = start({ "{addr = '127.0.0.1:0', tls = true}" }, defaults(),
      { args = { "--workers", "2" } })
    -- Each reconnect is a new connection from a new port: the kernel spreads
    -- them over both workers, and every one must resume.
    for _ = 1, 3 do
      local out = s_client(ports[1], "", "-tls1_2 -reconnect")
      local _, reused = out:gsub("\nReused, TLSv1%.2", "")
      assert.are.equal(5, reused, out)
    end
    assert.are.equal(0, srv:stop())
  end)

  it("resumes a TLS 1.3 session from a ticket (s_client -sess_out / -sess_in); the script sees resumed", function()
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" }, defaults())
    local sess = H.tempdir() .. "/sess.pem"
    -- the ticket comes after the handshake: the QUIT round trip waits for it
    local out = s_client(ports[1], "x\nQUIT\n", "-tls1_3 -sess_out " .. q(sess))
    assert.are.equal("false", hello(out).resumed, out)
    out = s_client(ports[1], "x\nQUIT\n", "-tls1_3 -sess_in " .. q(sess))
    assert.truthy(out:find("\nReused, TLSv1.3", 1, true), out)
    assert.are.equal("true", hello(out).resumed, out)
    assert.are.equal(1, stats(srv, plain).tls_resumed)
    assert.are.equal(0, srv:stop())
  end)

  it("tickets = false: no ticket is sent, and TLS 1.2 sessions resume by session id", function()
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" }, defaults("tickets = false"))
    local out = s_client(ports[1], "", "-tls1_2 -reconnect")
    assert.falsy(out:find("TLS session ticket", 1, true), out)
    local _, reused = out:gsub("\nReused, TLSv1%.2", "")
    assert.are.equal(5, reused, out)
    assert.are.equal(5, stats(srv, plain).tls_resumed)
    assert.are.equal(0, srv:stop())
  end)

  it("reads the certificate files again on SIGHUP; live connections keep going; a broken file keeps the last good one", function()
    local ssl = require "ssl"
    local tmp = H.tempdir()
    local cert, key = tmp .. "/cert.pem", tmp .. "/key.pem"
    local function put(c, k)
      if c then write(cert, assert(H.read_file(f(c)))) end
      if k then write(key, assert(H.read_file(f(k)))) end
    end
    put("server.pem", "server.key")
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" },
      ("{cert = %q, key = %q}"):format(cert, key))
    local p = ports[1]
    assert.are.equal("CN=localhost", subject_of(s_client(p)))

    -- a connection opened before the reload, kept open across it
    local raw = srv:connect("127.0.0.1:" .. p)
    local live = assert(ssl.wrap(raw, { mode = "client", protocol = "any", verify = "peer",
      cafile = f("ca.pem") }))
    live:settimeout(5)
    assert(live:dohandshake())
    local ok, why = pcall(function()
      assert.truthy(live:receive("*l"):match("^HELLO "))

      -- a new pair with another subject
      put("renewed.pem", "renewed.key")
      srv:signal("HUP")
      srv:expect_log("reloaded %(SIGHUP%)", 5)
      assert.are.equal("CN=renewed", subject_of(s_client(p)))
      H.send(live, "still here\n")
      assert.are.equal("ECHO still here", live:receive("*l"))

      -- a broken certificate: the reload fails, the last good one serves
      write(cert, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
      srv:signal("HUP")
      srv:expect_log("reload %(SIGHUP%) failed[^\n]*keeps serving", 5)
      assert.are.equal("CN=renewed", subject_of(s_client(p)))
      assert.are.equal(1, stats(srv, plain).reload_failed)
      H.send(live, "after failure\n")
      assert.are.equal("ECHO after failure", live:receive("*l"))

      -- a missing key: the same
      put("renewed.pem")
      os.remove(key)
      srv:signal("HUP")
      H.wait_until(function() return srv:count_log("reload %(SIGHUP%) failed") >= 2 end, 5)
      assert.are.equal(2, srv:count_log("reload %(SIGHUP%) failed"))
      assert.are.equal("CN=renewed", subject_of(s_client(p)))
      assert.are.equal(2, stats(srv, plain).reload_failed)

      -- good files again: the next reload takes them
      put("server.pem", "server.key")
      srv:signal("HUP")
      H.wait_until(function() return srv:count_log("reloaded %(SIGHUP%)") >= 2 end, 5)
      assert.are.equal(2, srv:count_log("reloaded %(SIGHUP%)"))
      assert.are.equal("CN=localhost", subject_of(s_client(p)))
      H.send(live, "QUIT\n")
      local rest, err = live:receive("*a")
      assert.are.equal("", rest or "", err)
    end)
    live:close()
    if not ok then error(why, 0) end
    assert.are.equal(0, srv:stop())
  end)

  it("--check reports a key that does not match its certificate (default and SNI certificates)", function()
    local function module(tls)
      return H.write_script(("return { listen = { {addr = '127.0.0.1:0', tls = true} }, tls = %s, "
        .. "on_message = function() end }\n"):format(tls))
    end
    local rc, _, err = H.run({ "--check", module(("{cert = %q, key = %q}")
      :format(f("server.pem"), f("other.key"))) })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find("does not match", 1, true), err)
    rc, _, err = H.run({ "--check", module(("{cert = %q, key = %q, certs = { {cert = %q, key = %q} }}")
      :format(f("server.pem"), f("server.key"), f("sni.pem"), f("server.key"))) })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find("does not match", 1, true), err)
    assert.truthy(err:find("sni.pem", 1, true), err)
    -- the command line's pair, checked the same way
    rc, _, err = H.run({ "--check", "-l", "tls://127.0.0.1:0", "--tls-cert", f("server.pem"),
      "--tls-key", f("other.key"), module(("{cert = %q, key = %q}"):format(f("server.pem"), f("server.key"))) })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find("does not match", 1, true), err)
    rc, _, err = H.run({ "--check", module(("{cert = %q, key = %q, certs = { {cert = %q, key = %q} }}")
      :format(f("server.pem"), f("server.key"), f("sni.pem"), f("sni.key"))) })
    assert.are.equal(0, rc, err)
  end)

  it("refuses an unknown setting name, naming it (exit 2)", function()
    local cases = {
      { ("tls = {cert = %q, key = %q, alpn_protocols = {'h2'}}, listen = { {addr = '127.0.0.1:0', tls = true} }")
          :format(f("server.pem"), f("server.key")), "alpn_protocols" },
      { ("listen = { {addr = '127.0.0.1:0', tls = {cert = %q, key = %q, verify = 'required'}} }")
          :format(f("server.pem"), f("server.key")), "verify" },
    }
    for _, c in ipairs(cases) do
      local path = H.write_script("return { " .. c[1] .. ", on_message = function() end }\n")
      local rc, _, err = H.run({ path }, { timeout = 10 })
      assert.are.equal(2, rc, err)
      assert.truthy(err:find('"' .. c[2] .. '"', 1, true), err)
      rc, _, err = H.run({ "--check", path })
      assert.are.equal(2, rc, err)
      assert.truthy(err:find('"' .. c[2] .. '"', 1, true), err)
    end
  end)

  it("the command line's --tls-cert/--tls-key replace the module's pair; its other settings stay", function()
    local srv = H.start(script('"127.0.0.1:0"', defaults('alpn = {"h2"}')), {
      listen = "tls://127.0.0.1:0",
      args = { "--tls-cert", f("renewed.pem"), "--tls-key", f("renewed.key") } })
    local out = s_client(srv.port, "SETTINGS\nQUIT\n", "-alpn h2")
    assert.are.equal("CN=renewed", subject_of(out), out)
    assert.are.equal("h2", hello(out).alpn, out)
    assert.truthy(out:find("\nSETTINGS " .. f("renewed.pem") .. " " .. f("renewed.key") .. "\n", 1, true), out)
    assert.are.equal(0, srv:stop())
  end)

  it("hs.tls_settings() is nil without TLS defaults", function()
    local srv = H.start(script('"127.0.0.1:0"'), { listen = "127.0.0.1:0" })
    local c = srv:connect()
    H.send(c, "SETTINGS\n")
    assert.are.equal("SETTINGS nil", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("serves TLS on a unix socket listener (s_client -unix)", function()
    local path = H.tempdir() .. "/tls.sock"
    local srv, ports = start({ ("{addr = %q, tls = true}"):format("unix:" .. path) },
      defaults('alpn = {"http/1.1"}'))
    assert.are.equal("unix:" .. path, ports[1])
    local out = s_client("unix:" .. path, "over unix\nQUIT\n", "-alpn http/1.1")
    assert.truthy(out:find("\nECHO over unix\n", 1, true), out)
    local t = hello(out)
    assert.truthy(t, out)
    assert.are.equal("http/1.1", t.alpn)
    assert.are.equal("CN=localhost", subject_of(out))
    assert.are.equal(0, srv:stop())
  end)

  it("answers redis-cli --tls with examples/redis.lua (PING, SET, GET)", function()
    local srv = H.start("examples/redis.lua", { listen = "tls://127.0.0.1:0",
      args = { "--tls-cert", f("server.pem"), "--tls-key", f("server.key") } })
    local function cli(...)
      local args = { "timeout 10 redis-cli --tls --cacert", q(f("ca.pem")), "-h 127.0.0.1 -p", srv.port }
      for _, a in ipairs({ ... }) do args[#args + 1] = q(a) end
      local out, rc = sh(table.concat(args, " "))
      assert.are.equal(0, rc, out)
      return trim(out)
    end
    assert.are.equal("PONG", cli("PING"))
    assert.are.equal("OK", cli("SET", "greeting", "over tls"))
    assert.are.equal("over tls", cli("GET", "greeting"))
    assert.are.equal(0, srv:stop())
  end)

  it("serves wrk over https with examples/http.lua, without socket errors", function()
    local srv = H.start("examples/http.lua", { listen = "tls://127.0.0.1:0",
      args = { "--tls-cert", f("server.pem"), "--tls-key", f("server.key") } })
    local out, rc = sh(("timeout 30 wrk -t1 -c2 -d1s https://127.0.0.1:%d/"):format(srv.port))
    assert.are.equal(0, rc, out)
    local n = tonumber(out:match("(%d+) requests in"))
    assert.truthy(n and n > 0, out)
    -- No read, write or timeout error. A single connect error was seen once
    -- on a loaded machine under ASan and never reproduced; more than one
    -- fails the test.
    local c, r, w, t = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
    if c then
      assert.truthy(tonumber(c) <= 1 and r == "0" and w == "0" and t == "0", out)
    end
    assert.falsy(out:find("Non-2xx", 1, true), out)
    assert.are.equal(0, srv:stop())
  end)

  it("counts garbage instead of a ClientHello in tls_handshake_failures and keeps serving others", function()
    local ssl = require "ssl"
    local srv, ports, plain = start({ "{addr = '127.0.0.1:0', tls = true}" }, defaults())
    local addr = "127.0.0.1:" .. ports[1]
    -- a client in the middle of its session
    local live = assert(ssl.wrap(srv:connect(addr), { mode = "client", protocol = "any",
      verify = "none" }))
    live:settimeout(5)
    assert(live:dohandshake())
    local ok, why = pcall(function()
      assert.truthy(live:receive("*l"):match("^HELLO "))
      -- garbage: closed
      local bad = srv:connect(addr)
      H.send(bad, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local err, rest = H.read_to_close(bad, 5)
      assert.truthy(err == "closed" or err == "connection reset by peer", err)
      assert.are.equal("", rest)
      -- more garbage, looking like a TLS record at first, left open
      local bad2 = srv:connect(addr)
      H.send(bad2, "\22\3\1\0\8" .. string.rep("\255", 64))
      -- the live client and a new one are served
      H.send(live, "after garbage\n")
      assert.are.equal("ECHO after garbage", live:receive("*l"))
      local out = s_client(ports[1], "new\nQUIT\n")
      assert.truthy(out:find("\nECHO new\n", 1, true), out)
      local s = H.wait_until(function()
        local t = stats(srv, plain)
        return t.tls_handshake_failures >= 2 and t
      end, 5)
      assert.truthy(s)
      assert.are.equal(2, s.tls_handshake_failures)
      assert.are.equal(2, s.tls_handshakes)
    end)
    live:close()
    if not ok then error(why, 0) end
    assert.are.equal(0, srv:stop())
  end)
end)
